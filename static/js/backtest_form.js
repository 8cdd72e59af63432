/*
 * Backtest form: shows only the markets of the chosen timeframe, the parameter inputs of the
 * chosen strategy, and the unit of the size for the chosen sizing mode. Without JavaScript
 * every option stays visible and the server checks the combination.
 */
(function () {
  "use strict";

  var form = document.getElementById("backtest-form");
  if (!form) {
    return;
  }
  var timeframe = form.querySelector('select[name="timeframe"]');
  var strategy = form.querySelector('select[name="strategy"]');
  var sizing = form.querySelector('select[name="sizing"]');
  var sizeLabel = form.querySelector('label[for="id_size_value"]');
  var UNITS = {
    fraction: "Size (% of equity)",
    notional: "Size (money per position)",
    risk: "Risk per trade (% of equity)",
    vol_target: "Volatility target (% a year)",
  };

  function filterSeries() {
    if (!timeframe) {
      return;
    }
    var tf = timeframe.value;
    form.querySelectorAll("#series-options [data-timeframe]").forEach(function (row) {
      var match = row.getAttribute("data-timeframe") === tf;
      // .check is display:flex in the house CSS, which would override the hidden attribute.
      row.style.display = match ? "" : "none";
      if (!match) {
        var box = row.querySelector("input");
        if (box) {
          box.checked = false;
        }
      }
    });
  }

  function showParams() {
    if (!strategy) {
      return;
    }
    form.querySelectorAll(".param-group").forEach(function (group) {
      group.hidden = group.getAttribute("data-strategy") !== strategy.value;
    });
  }

  function showUnit() {
    if (sizing && sizeLabel && UNITS[sizing.value]) {
      sizeLabel.textContent = UNITS[sizing.value];
    }
  }

  if (timeframe) {
    timeframe.addEventListener("change", filterSeries);
    filterSeries();
  }
  if (strategy) {
    strategy.addEventListener("change", showParams);
    showParams();
  }
  if (sizing) {
    sizing.addEventListener("change", showUnit);
    showUnit();
  }
  form.addEventListener("submit", function () {
    var button = document.getElementById("run-backtest");
    if (button) {
      // One click, one backtest: a double click must not submit twice.
      window.setTimeout(function () {
        button.disabled = true;
        button.textContent = "Submitting…";
      }, 0);
    }
  });
})();
