/*
 * Backtest detail page: what a backtest adds to the shared live progress (run_live.js): the
 * equity curve, which grows piece by piece while the simulation advances. Every message of the
 * run may carry an "equity" piece ({x: epoch ms, y: equity}); points not newer than the last
 * one drawn are skipped, so a repeated message draws nothing twice.
 */
(function () {
  "use strict";

  var root = document.getElementById("run-live");
  if (!root || root.getAttribute("data-active") !== "1") {
    return;
  }
  var lastX = -Infinity;

  root.addEventListener("run:message", function (event) {
    var equity = event.detail.equity;
    if (!equity || !equity.x || !equity.x.length || !window.QFCharts) {
      return;
    }
    var xs = [];
    var ys = [];
    for (var i = 0; i < equity.x.length; i++) {
      if (equity.x[i] > lastX) {
        // UTC date text rather than epoch ms: Plotly re-guesses the axis type when a trace's
        // data is replaced, and text dates keep it a date axis whatever the chart began as.
        xs.push(new Date(equity.x[i]).toISOString().slice(0, 19).replace("T", " "));
        ys.push(equity.y[i]);
        lastX = equity.x[i];
      }
    }
    if (xs.length) {
      window.QFCharts.appendEquity("live-equity", xs, ys);
    }
  });
})();
