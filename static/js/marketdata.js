/*
 * Market data: the live progress of a candle download (#fetch-job).
 *
 * Listens on the job's websocket (data-socket, messages {kind: "progress"|"done", payload});
 * if the socket cannot open, or goes quiet, it polls the JSON status URL (data-status-url)
 * every 2 s instead. Stops when the job is completed or failed.
 */
(function () {
  "use strict";

  var root = document.getElementById("fetch-job");
  if (!root) {
    return;
  }
  var bar = document.querySelector("#fetch-progress");
  var fill = bar && bar.querySelector(".progress-bar");
  var percent = document.getElementById("fetch-percent");
  var candles = document.getElementById("fetch-candles");
  var requests = document.getElementById("fetch-requests");
  var badge = document.getElementById("fetch-status");
  var errorBox = document.getElementById("fetch-error");
  var channel = document.getElementById("fetch-channel");
  var statusUrl = root.getAttribute("data-status-url");
  var LABELS = {
    queued: "Queued",
    running: "Running",
    completed: "Completed",
    failed: "Failed",
    cancelled: "Cancelled",
  };
  var POLL_MS = 2000;
  var finished = false;
  var pollTimer = null;
  var socket = null;
  var live = false;

  function isFinal(status) {
    return status === "completed" || status === "failed" || status === "cancelled";
  }

  function show(payload) {
    if (!payload) {
      return;
    }
    var pct = Math.max(0, Math.min(100, Math.round((payload.progress || 0) * 1000) / 10));
    if (payload.status === "completed") {
      pct = 100;
    }
    if (fill) {
      fill.style.width = pct + "%";
    }
    if (bar) {
      bar.setAttribute("aria-valuenow", String(Math.round(pct)));
      bar.classList.toggle("is-running", !isFinal(payload.status));
      bar.classList.toggle("is-done", payload.status === "completed");
      bar.classList.toggle("is-failed", payload.status === "failed");
    }
    if (percent) {
      percent.textContent = pct.toFixed(pct % 1 ? 1 : 0) + " %";
    }
    if (candles) {
      candles.textContent = (payload.candles_fetched || 0).toLocaleString("en-US");
    }
    if (requests) {
      requests.textContent = String(payload.requests_made || 0);
    }
    if (badge) {
      badge.textContent = LABELS[payload.status] || payload.status;
      badge.className = "badge badge-" + payload.status;
    }
    root.setAttribute("data-status", payload.status);
    if (errorBox) {
      errorBox.hidden = !payload.error;
      errorBox.style.display = payload.error ? "" : "none"; // .alert's display beats [hidden]
      errorBox.textContent = payload.error || "";
    }
    if (isFinal(payload.status)) {
      finish(payload);
    }
  }

  function finish(payload) {
    if (finished) {
      return;
    }
    finished = true;
    if (pollTimer !== null) {
      window.clearTimeout(pollTimer);
      pollTimer = null;
    }
    if (socket) {
      socket.close();
    }
    if (channel) {
      if (payload.status === "completed") {
        var count = payload.series ? payload.series.count : 0;
        channel.textContent =
          "Done. The series now holds " + (count || 0).toLocaleString("en-US") + " candles" +
          (payload.gaps ? " (" + payload.gaps + " gap" + (payload.gaps === 1 ? "" : "s") +
            " in the exchange's history, not filled)" : "") + ".";
      } else {
        channel.textContent = "";
      }
    }
  }

  function poll() {
    pollTimer = null;
    if (finished) {
      return;
    }
    window
      .csrfFetch(statusUrl, { headers: { Accept: "application/json" } })
      .then(function (response) {
        return response.ok ? response.json() : null;
      })
      .then(function (payload) {
        show(payload);
      })
      .catch(function () {
        return null;
      })
      .then(function () {
        if (!finished && !live && pollTimer === null) {
          pollTimer = window.setTimeout(poll, POLL_MS);
        }
      });
  }

  function startPolling() {
    if (!finished && pollTimer === null) {
      if (channel) {
        channel.textContent = "Live updates unavailable; checking every 2 seconds.";
      }
      pollTimer = window.setTimeout(poll, 0);
    }
  }

  var initial = document.getElementById("fetch-initial");
  if (initial) {
    try {
      show(JSON.parse(initial.textContent));
    } catch (e) {
      /* the server-rendered state is already on the page */
    }
  }
  if (finished) {
    return;
  }

  if (window.openSocket && "WebSocket" in window) {
    var opened = false;
    socket = window.openSocket(root.getAttribute("data-socket"), function (message) {
      if (message && message.payload) {
        show(message.payload);
      }
    }, {
      onOpen: function () {
        opened = true;
        live = true;
        if (pollTimer !== null) {
          window.clearTimeout(pollTimer);
          pollTimer = null;
        }
        if (channel && !finished) {
          channel.textContent = "Live.";
        }
        // A message sent between the page render and the socket joining its group is lost:
        // one status read closes that window.
        poll();
      },
      onClose: function () {
        live = false;
        if (!finished) {
          startPolling();
        }
      },
    });
    // A socket that has not opened after 3 s (proxy without websockets): poll meanwhile.
    window.setTimeout(function () {
      if (!opened) {
        startPolling();
      }
    }, 3000);
  } else {
    startPolling();
  }
})();
