/*
 * Backtest detail page: live progress and the growing equity curve while the run is queued or
 * running, over the websocket ws/backtests/<id>/ (the server sends the current state on
 * connect, then backtest.progress and backtest.status messages). If the socket cannot connect,
 * the page polls the JSON status URL instead. When the run finishes the page reloads, so the
 * server renders the results (or the error) in full.
 */
(function () {
  "use strict";

  var root = document.getElementById("backtest-live");
  if (!root || root.getAttribute("data-active") !== "1") {
    return;
  }
  var bar = root.querySelector(".progress");
  var fill = root.querySelector(".progress-bar");
  var text = document.getElementById("bt-progress-text");
  var stage = document.getElementById("bt-stage");
  var badge = document.getElementById("bt-status");
  var live = document.getElementById("live-state");
  var errorSlot = document.getElementById("bt-error-slot");
  var cancelForm = document.getElementById("cancel-form");

  var POLL_MS = 1500;
  var OPEN_TIMEOUT_MS = 4000;
  var STAGES = {
    queued: "Queued, waiting for a worker",
    loading: "Loading candles",
    signals: "Computing signals",
    simulating: "Simulating",
    metrics: "Computing metrics",
    saving: "Saving results",
    done: "Done",
  };

  var shown = 0;
  var lastX = -Infinity;
  var finished = false;
  var socket = null;
  var opened = false;
  var pollTimer = null;

  function setLive(state, label, cls) {
    if (!live) {
      return;
    }
    live.setAttribute("data-state", state);
    live.textContent = label;
    live.className = "badge " + cls;
  }

  function setProgress(value) {
    // Messages may arrive out of order around a reconnect; progress only moves forward.
    if (typeof value !== "number" || value < shown) {
      return;
    }
    shown = Math.min(1, value);
    var pct = Math.round(shown * 100);
    fill.style.width = pct + "%";
    bar.setAttribute("aria-valuenow", String(pct));
    text.textContent = pct + " %";
  }

  function appendEquity(equity) {
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
  }

  function setStatus(status, label) {
    if (!badge || !status) {
      return;
    }
    badge.setAttribute("data-status", status);
    badge.className = "badge badge-" + status;
    badge.textContent = label || status;
  }

  function finish(message) {
    if (finished) {
      return;
    }
    finished = true;
    if (pollTimer !== null) {
      window.clearInterval(pollTimer);
    }
    if (socket) {
      socket.close();
    }
    bar.classList.remove("is-running");
    if (message.status === "completed") {
      setProgress(1);
      bar.classList.add("is-done");
      stage.textContent = "Completed, loading results…";
    } else if (message.status === "failed") {
      bar.classList.add("is-failed");
      stage.textContent = "Failed";
      if (errorSlot) {
        var alert = document.createElement("div");
        alert.className = "alert alert-error";
        alert.setAttribute("role", "alert");
        var body = document.createElement("div");
        body.className = "alert-body";
        body.textContent = message.error || "The backtest failed.";
        alert.appendChild(body);
        errorSlot.appendChild(alert);
      }
    } else {
      stage.textContent = message.status_display || message.status;
    }
    if (cancelForm) {
      cancelForm.hidden = true;
    }
    setLive("idle", "Finished", "badge-muted");
    // The server renders the finished page in full (results, charts, exports).
    window.setTimeout(function () {
      window.location.reload();
    }, 400);
  }

  function apply(message) {
    if (!message || finished) {
      return;
    }
    if (message.type === "backtest.progress") {
      setProgress(message.progress);
      if (message.stage) {
        stage.textContent = STAGES[message.stage] || message.stage;
      }
      appendEquity(message.equity);
      return;
    }
    if (message.type === "backtest.status") {
      setStatus(message.status, message.status_display);
      setProgress(message.progress);
      if (message.stage && STAGES[message.stage]) {
        stage.textContent = STAGES[message.stage];
      }
      appendEquity(message.equity);
      if (message.finished) {
        finish(message);
      }
    }
  }

  function poll() {
    window
      .csrfFetch(root.getAttribute("data-status-url"), { headers: { Accept: "application/json" } })
      .then(function (response) {
        return response.ok ? response.json() : null;
      })
      .then(apply)
      .catch(function () {
        /* keep polling: the server may be restarting */
      });
  }

  function startPolling() {
    if (pollTimer !== null || finished) {
      return;
    }
    setLive("polling", "Live: polling", "badge-warn");
    poll();
    pollTimer = window.setInterval(poll, POLL_MS);
  }

  var initial = document.getElementById("backtest-state");
  if (initial) {
    try {
      apply(JSON.parse(initial.textContent));
    } catch (e) {
      /* the socket's first message carries the same state */
    }
  }

  if (window.openSocket) {
    socket = window.openSocket(root.getAttribute("data-ws"), apply, {
      onOpen: function () {
        opened = true;
        if (pollTimer !== null) {
          window.clearInterval(pollTimer);
          pollTimer = null;
        }
        setLive("open", "Live: on", "badge-ok");
      },
      onClose: function (event) {
        if (finished) {
          return;
        }
        // Refused, or never got through: poll. A drop after a good connection reconnects by
        // itself (app.js); poll meanwhile so nothing is missed.
        startPolling();
        if (event.code >= 4000 && event.code < 5000) {
          setLive("refused", "Live: refused", "badge-bad");
        }
      },
    });
    window.setTimeout(function () {
      if (!opened) {
        startPolling();
      }
    }, OPEN_TIMEOUT_MS);
  } else {
    startPolling();
  }
})();
