/*
 * Live progress of one background run, for every kind (backtest, optimization, walk-forward,
 * Monte Carlo, stress test, scan, candle download, upload): the one client of the shared run
 * lifecycle (config/runs). The markup is templates/runs/_progress.html:
 *
 *   <section data-run-live data-socket="/ws/runs/<kind>/<id>/"
 *            data-state-url="/runs/<kind>/<id>/state/" data-active="1" data-reload="1">
 *
 * The websocket sends the run's state on connect, then "run.progress" and "run.status"
 * messages ({status, progress, stage, error, finished, ...the kind's own fields}). If the socket
 * cannot connect (or is refused), the page polls the state URL instead. Progress only moves
 * forward (messages may repeat around a reconnect, and chunks finish out of order). Every
 * message is also dispatched on the section as a "run:message" event (detail: the message) for
 * page scripts that draw more (the growing equity curve, the best result so far). When the run
 * finishes the page reloads (data-reload="1"), so the server renders the outcome in full.
 */
(function () {
  "use strict";

  var POLL_MS = 1500;
  var OPEN_TIMEOUT_MS = 4000;
  var STAGES = {
    queued: "Queued, waiting for a worker",
    running: "Running",
    loading: "Loading candles",
    signals: "Computing signals",
    simulating: "Simulating",
    metrics: "Computing metrics",
    saving: "Saving results",
    chunks: "Evaluating combinations",
    windows: "Walking forward",
    shocks: "Running shocks",
    symbols: "Choosing symbols",
    scanning: "Scanning",
    downloading: "Downloading",
    parsing: "Reading the file",
    storing: "Storing candles",
    done: "Done",
  };

  function attach(root) {
    if (root.getAttribute("data-active") !== "1") {
      return; // the server drew the outcome; nothing is live
    }
    var bar = root.querySelector("[data-run-bar]");
    var fill = root.querySelector("[data-run-fill]");
    var percent = root.querySelector("[data-run-percent]");
    var stage = root.querySelector("[data-run-stage]");
    var channel = root.querySelector("[data-run-channel]");
    var errorSlot = root.querySelector("[data-run-error-slot]");
    var badges = document.querySelectorAll("[data-run-status]");
    var cancelForms = document.querySelectorAll("[data-run-cancel]");
    var noun = root.getAttribute("data-noun") || "run";
    var shown = -1;
    var finished = false;
    var socket = null;
    var opened = false;
    var pollTimer = null;

    function setChannel(state, label, cls) {
      if (channel) {
        channel.setAttribute("data-state", state);
        channel.textContent = label;
        channel.className = "badge " + cls;
      }
    }

    function setProgress(value) {
      if (typeof value !== "number" || value < shown) {
        return;
      }
      shown = Math.min(1, value);
      var pct = Math.round(shown * 100);
      if (fill) {
        fill.style.width = pct + "%";
      }
      if (bar) {
        bar.setAttribute("aria-valuenow", String(pct));
      }
      if (percent) {
        percent.textContent = pct + " %";
      }
    }

    function setStatus(message) {
      if (!message.status || message.type !== "run.status") {
        return;
      }
      badges.forEach(function (badge) {
        badge.setAttribute("data-status", message.status);
        badge.className = "badge badge-" + message.status;
        badge.textContent = message.status_display || message.status;
      });
    }

    function finish(message) {
      finished = true;
      if (pollTimer !== null) {
        window.clearInterval(pollTimer);
      }
      if (socket) {
        socket.close();
      }
      if (bar) {
        bar.classList.remove("is-running");
        bar.classList.toggle("is-done", message.status === "completed");
        bar.classList.toggle("is-failed", message.status === "failed");
      }
      if (message.status === "completed") {
        setProgress(1);
      }
      if (stage) {
        stage.textContent = message.status_display || message.status;
      }
      if (message.status === "failed" && errorSlot) {
        var alert = document.createElement("div");
        alert.className = "alert alert-error";
        alert.setAttribute("role", "alert");
        var body = document.createElement("div");
        body.className = "alert-body";
        body.textContent = message.error || "The " + noun + " failed.";
        alert.appendChild(body);
        errorSlot.appendChild(alert);
      }
      cancelForms.forEach(function (form) {
        form.hidden = true;
      });
      setChannel("idle", "Finished", "badge-muted");
      if (root.getAttribute("data-reload") === "1") {
        window.setTimeout(function () {
          window.location.reload();
        }, 400);
      }
    }

    function apply(message) {
      if (!message || finished || typeof message.type !== "string") {
        return;
      }
      if (message.type !== "run.status" && message.type !== "run.progress") {
        return;
      }
      setProgress(message.progress);
      if (stage && message.stage && !message.finished) {
        stage.textContent = STAGES[message.stage] || message.stage;
      }
      setStatus(message);
      root.dispatchEvent(new CustomEvent("run:message", { detail: message }));
      if (message.type === "run.status" && message.finished) {
        finish(message);
      }
    }

    function poll() {
      window
        .csrfFetch(root.getAttribute("data-state-url"), {
          headers: { Accept: "application/json" },
        })
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
      setChannel("polling", "Live: polling", "badge-warn");
      poll();
      pollTimer = window.setInterval(poll, POLL_MS);
    }

    var initial = root.querySelector("#run-state");
    if (initial) {
      try {
        var first = JSON.parse(initial.textContent);
        first.type = first.type || "run.status";
        apply(first);
      } catch (e) {
        /* the socket's first message carries the same state */
      }
    }
    if (finished) {
      return;
    }
    if (window.openSocket) {
      socket = window.openSocket(root.getAttribute("data-socket"), apply, {
        onOpen: function () {
          opened = true;
          if (pollTimer !== null) {
            window.clearInterval(pollTimer);
            pollTimer = null;
          }
          setChannel("open", "Live: on", "badge-ok");
        },
        onClose: function (event) {
          if (finished) {
            return;
          }
          // Refused, or never got through: poll. A drop after a good connection reconnects
          // by itself (app.js); poll meanwhile so nothing is missed.
          startPolling();
          if (event.code >= 4000 && event.code < 5000) {
            setChannel("refused", "Live: refused", "badge-bad");
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
  }

  // After every deferred page script has run, so their "run:message" listeners see the first
  // message too.
  function start() {
    document.querySelectorAll("[data-run-live]").forEach(attach);
  }
  window.onReady(start);
})();
