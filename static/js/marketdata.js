/*
 * A candle download's page: what a download adds to the shared live progress (run_live.js),
 * the candles received and requests made so far.
 */
(function () {
  "use strict";

  var root = document.getElementById("run-live");
  var candles = document.getElementById("fetch-candles");
  var requests = document.getElementById("fetch-requests");
  if (!root || !candles) {
    return;
  }
  root.addEventListener("run:message", function (event) {
    var message = event.detail;
    if (typeof message.candles_fetched === "number") {
      candles.textContent = message.candles_fetched.toLocaleString("en-US");
    }
    if (requests && typeof message.requests_made === "number") {
      requests.textContent = String(message.requests_made);
    }
  });
})();
