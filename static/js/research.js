/*
 * Research job pages (optimization, walk-forward): live progress while the job is queued or
 * running, over the websocket named in #research-live[data-ws] (the server sends the current
 * state on connect, then <kind>.progress and <kind>.status messages). An optimization's
 * messages carry combinations done / total, chunks done and the best result so far; a
 * walk-forward's the windows done and the latest window. Counters only move forward: chunks
 * finish on several workers at once, so their messages may arrive out of order. If the socket
 * cannot connect, the page polls the JSON status URL. When the job finishes the page reloads,
 * so the server renders the results in full. The heatmap's selectors apply on change.
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

  var root = document.getElementById("research-live");
  if (!root || root.getAttribute("data-active") !== "1") {
    return;
  }
  var kind = root.getAttribute("data-kind");
  var bar = root.querySelector(".progress");
  var fill = root.querySelector(".progress-bar");
  var text = document.getElementById("job-progress-text");
  var doneEl = document.getElementById("job-done");
  var totalEl = document.getElementById("job-total");
  var chunksEl = document.getElementById("job-chunks-done");
  var badge = document.getElementById("job-status");
  var live = document.getElementById("live-state");
  var errorSlot = document.getElementById("job-error-slot");
  var cancelForm = document.getElementById("cancel-form");
  var bestBox = document.getElementById("live-best");
  var bestValue = document.getElementById("live-best-value");
  var bestParams = document.getElementById("live-best-params");
  var workerEl = document.getElementById("live-worker");
  var latestBox = document.getElementById("live-latest");

  var POLL_MS = 1500;
  var OPEN_TIMEOUT_MS = 4000;
  var done = -1;
  var chunks = -1;
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
    if (typeof message.done !== "number" || message.done < done) {
      return false;
    }
    done = message.done;
    doneEl.textContent = String(done);
    if (typeof message.total === "number") {
      totalEl.textContent = String(message.total);
    }
    if (chunksEl && typeof message.chunks_done === "number" && message.chunks_done > chunks) {
      chunks = message.chunks_done;
      chunksEl.textContent = String(chunks);
    }
    var total = message.total || 0;
    var pct = total ? Math.round((100 * done) / total) : 0;
    if (message.status === "completed") {
      pct = 100;
    }
    fill.style.width = pct + "%";
    bar.setAttribute("aria-valuenow", String(pct));
    text.textContent = pct + " %";
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
      bar.classList.add("is-done");
    } else if (message.status === "failed") {
      bar.classList.add("is-failed");
      if (errorSlot) {
        var alert = document.createElement("div");
        alert.className = "alert alert-error";
        alert.setAttribute("role", "alert");
        var body = document.createElement("div");
        body.className = "alert-body";
        body.textContent = message.error || "The job failed.";
        alert.appendChild(body);
        errorSlot.appendChild(alert);
      }
    }
    if (cancelForm) {
      cancelForm.hidden = true;
    }
    setLive("idle", "Finished", "badge-muted");
    window.setTimeout(function () {
      window.location.reload();
    }, 400);
  }

  function apply(message) {
    if (!message || finished || typeof message.type !== "string") {
      return;
    }
    if (message.type.indexOf(kind + ".") !== 0) {
      return;
    }
    var fresh = setCounts(message);
    if (fresh) {
      setBest(message.best, message.worker);
      setLatest(message.latest);
    }
    if (message.type === kind + ".status") {
      setStatus(message.status, message.status_display);
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

  var initial = document.getElementById("job-state");
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
