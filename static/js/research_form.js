/*
 * Research forms (optimization, walk-forward): show the parameter ranges of the chosen
 * strategy, the sample size and seed only for random search, and the unit of the size for the
 * chosen sizing mode. Without JavaScript everything stays visible and the server checks it.
 */
(function () {
  "use strict";

  var form = document.getElementById("research-form");
  if (!form) {
    return;
  }
  var strategy = form.querySelector('select[name="strategy"]');
  var method = form.querySelector('select[name="method"]');
  var random = document.getElementById("random-fields");
  var sizing = form.querySelector('select[name="sizing"]');
  var sizeLabel = form.querySelector('label[for="id_size_value"]');
  var UNITS = {
    fraction: "Size (% of equity)",
    notional: "Size (money per position)",
    risk: "Risk per trade (% of equity)",
    vol_target: "Volatility target (% a year)",
  };

  function showRanges() {
    form.querySelectorAll(".range-group").forEach(function (group) {
      group.hidden = group.getAttribute("data-strategy") !== strategy.value;
    });
  }

  function showRandom() {
    if (random) {
      // .grid-2 is display:grid in the house CSS, which would override the hidden attribute.
      random.style.display = method.value === "random" ? "" : "none";
    }
  }

  function showUnit() {
    if (sizing && sizeLabel && UNITS[sizing.value]) {
      sizeLabel.textContent = UNITS[sizing.value];
    }
  }

  if (strategy) {
    strategy.addEventListener("change", showRanges);
    showRanges();
  }
  if (method) {
    method.addEventListener("change", showRandom);
    showRandom();
  }
  if (sizing) {
    sizing.addEventListener("change", showUnit);
    showUnit();
  }
  form.addEventListener("submit", function () {
    var button = document.getElementById("run-research");
    if (button) {
      // One click, one job: a double click must not submit twice.
      window.setTimeout(function () {
        button.disabled = true;
        button.textContent = "Submitting…";
      }, 0);
    }
  });
})();
