/*
 * Research job pages (optimization, walk-forward): what a research job adds to the shared live
 * progress (run_live.js). An optimization's messages carry combinations done / total, chunks
 * done and the best result so far; a walk-forward's the windows done and the latest window.
 * The heatmap's selectors apply on change.
 */
(function () {
  "use strict";

  var heatForm = document.getElementById("heatmap-form");
  if (heatForm) {
    heatForm.querySelectorAll("select").forEach(function (select) {
      select.addEventListener("change", function () {
        heatForm.submit();
      });
    });
  }

  var root = document.getElementById("run-live");
  if (!root || root.getAttribute("data-active") !== "1") {
    return;
  }
  var doneEl = document.getElementById("job-done");
  var totalEl = document.getElementById("job-total");
  var chunksEl = document.getElementById("job-chunks-done");
  var bestBox = document.getElementById("live-best");
  var bestValue = document.getElementById("live-best-value");
  var bestParams = document.getElementById("live-best-params");
  var workerEl = document.getElementById("live-worker");
  var latestBox = document.getElementById("live-latest");
  var done = -1;
  var chunks = -1;

  function formatNumber(value) {
    if (value === "inf") {
      return "∞";
    }
    if (value === "-inf") {
      return "-∞";
    }
    if (typeof value !== "number") {
      return "—";
    }
    return value.toFixed(3);
  }

  function formatParams(params) {
    if (!params) {
      return "";
    }
    return Object.keys(params)
      .map(function (key) {
        return key + "=" + params[key];
      })
      .join(", ");
  }

  function setCounts(message) {
    // Chunks finish on several workers at once: counters only move forward.
    if (typeof message.done !== "number" || message.done < done || !doneEl) {
      return false;
    }
    done = message.done;
    doneEl.textContent = String(done);
    if (totalEl && typeof message.total === "number") {
      totalEl.textContent = String(message.total);
    }
    if (chunksEl && typeof message.chunks_done === "number" && message.chunks_done > chunks) {
      chunks = message.chunks_done;
      chunksEl.textContent = String(chunks);
    }
    return true;
  }

  function setBest(best, worker) {
    if (!bestBox || !best) {
      return;
    }
    bestBox.hidden = false;
    bestValue.textContent = formatNumber(best.objective);
    bestParams.textContent = formatParams(best.params);
    if (workerEl && worker) {
      workerEl.textContent = "· last chunk from " + worker;
    }
  }

  function setLatest(latest) {
    if (!latestBox || !latest) {
      return;
    }
    latestBox.hidden = false;
    var oos = latest.out_of_sample || {};
    var ret = typeof oos.total_return === "number" ? (oos.total_return * 100).toFixed(2) + " %" : "—";
    latestBox.textContent =
      "Window " +
      (latest.index + 1) +
      ": " +
      (latest.params ? formatParams(latest.params) : "no combination qualified") +
      " · out-of-sample return " +
      ret;
  }

  root.addEventListener("run:message", function (event) {
    var message = event.detail;
    if (setCounts(message)) {
      setBest(message.best, message.worker);
      setLatest(message.latest);
    }
  });
})();
