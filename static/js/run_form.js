/*
 * Every run form (backtest, optimization, walk-forward; templates with data-run-form): shows
 * only the markets of the chosen timeframe, the parameter inputs (or ranges) of the chosen
 * strategy, the sample size and seed only for a random search, and the unit of the size for
 * the chosen sizing mode; a double click submits once. Without JavaScript every option stays
 * visible and the server checks the combination.
 */
(function () {
  "use strict";

  var form = document.querySelector("form[data-run-form]");
  if (!form) {
    return;
  }
  var timeframe = form.querySelector('select[name="timeframe"]');
  var strategy = form.querySelector('select[name="strategy"]');
  var method = form.querySelector('select[name="method"]');
  var random = document.getElementById("random-fields");
  var sizing = form.querySelector('select[name="sizing"]');
  var sizeLabel = form.querySelector('label[for="id_size_value"]');
  var submit = form.querySelector("button[type=submit]");
  var UNITS = {
    fraction: "Size (% of equity)",
    notional: "Size (money per position)",
    risk: "Risk per trade (% of equity)",
    vol_target: "Volatility target (% a year)",
  };

  function filterSeries() {
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

  function showStrategy() {
    form.querySelectorAll(".param-group, .range-group").forEach(function (group) {
      group.hidden = group.getAttribute("data-strategy") !== strategy.value;
    });
  }

  function showRandom() {
    // .grid-2 is display:grid in the house CSS, which would override the hidden attribute.
    random.style.display = method.value === "random" ? "" : "none";
  }

  function showUnit() {
    if (sizeLabel && UNITS[sizing.value]) {
      sizeLabel.textContent = UNITS[sizing.value];
    }
  }

  function watch(select, show) {
    select.addEventListener("change", show);
    show();
  }

  if (timeframe) {
    watch(timeframe, filterSeries);
  }
  if (strategy) {
    watch(strategy, showStrategy);
  }
  if (method && random) {
    watch(method, showRandom);
  }
  if (sizing) {
    watch(sizing, showUnit);
  }
  form.addEventListener("submit", function () {
    if (submit) {
      // One click, one run: a double click must not submit twice.
      window.setTimeout(function () {
        submit.disabled = true;
        submit.textContent = "Submitting…";
      }, 0);
    }
  });
})();
