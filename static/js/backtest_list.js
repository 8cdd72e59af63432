/*
 * Backtest list: refreshes the status panel every few seconds while something is queued or
 * running, and keeps the compare button honest (it needs two completed backtests ticked).
 */
(function () {
  "use strict";

  var REFRESH_MS = 5000;
  var slot = document.getElementById("status-panel-slot");
  var compare = document.getElementById("compare-form");
  var button = document.getElementById("compare-button");

  function busy() {
    if (!slot) {
      return false;
    }
    var running = slot.querySelector('[data-status="running"]');
    var queued = slot.querySelector('[data-status="queued"]');
    return (
      (running && parseInt(running.textContent, 10) > 0) ||
      (queued && parseInt(queued.textContent, 10) > 0)
    );
  }

  function refresh() {
    if (!busy() || document.visibilityState !== "visible") {
      return;
    }
    window
      .csrfFetch(slot.getAttribute("data-url"), { headers: { Accept: "text/html" } })
      .then(function (response) {
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html) {
          slot.innerHTML = html;
        }
      })
      .catch(function () {});
  }

  if (slot && window.csrfFetch) {
    window.setInterval(refresh, REFRESH_MS);
  }

  function syncCompare() {
    if (!compare || !button) {
      return;
    }
    var ticked = compare.querySelectorAll('input[name="ids"]:checked').length;
    button.disabled = ticked < 2;
    button.title = ticked < 2 ? "Tick at least two completed backtests" : "";
  }

  if (compare) {
    compare.addEventListener("change", syncCompare);
    syncCompare();
  }
})();
