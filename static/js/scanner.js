/*
 * Scanner pages.
 *
 * Watchlist form (#watchlist-form): shows the symbol list or the top-N fields depending on
 * the "Scan" choice (both stay in the form, so nothing is lost when switching back).
 *
 * Scanner and alert pages (#scanner-notices): a notice for each "scanner.alerts" message on
 * the user's notification socket (new BUY/SELL signals of a watchlist that asks for them).
 *
 * Scan page (#scan-live): listens on the scan's websocket (data-socket; messages
 * {type: "scan.progress"|"scan.status", status, stage, progress, symbols_done, symbols_total,
 * error}); if the socket cannot open or goes quiet it polls the JSON status URL
 * (data-status-url) every 2 s. When the scan finishes the page reloads once, so the results
 * table is drawn by the server.
 */
(function () {
  "use strict";

  // ---- watchlist form ------------------------------------------------------------------
  var form = document.getElementById("watchlist-form");
  if (form) {
    var sections = form.querySelectorAll("[data-universe]");
    var radios = form.querySelectorAll('input[name="universe"]');
    var sync = function () {
      var chosen = "symbols";
      radios.forEach(function (r) {
        if (r.checked) {
          chosen = r.value;
        }
      });
      sections.forEach(function (el) {
        var hide = el.getAttribute("data-universe") !== chosen;
        el.hidden = hide;
        el.style.display = hide ? "none" : ""; // a grid's display beats [hidden]
      });
    };
    radios.forEach(function (r) {
      r.addEventListener("change", sync);
    });
    sync();
  }

  // ---- new signals from scheduled scans (scanner and alert pages) --------------------------
  var notices = document.getElementById("scanner-notices");
  if (notices && window.openSocket) {
    window.openSocket("/ws/notifications/", function (message) {
      if (!message || message.kind !== "scanner.alerts" || !message.payload) {
        return;
      }
      var payload = message.payload;
      var box = document.createElement("div");
      box.className = "alert alert-info";
      box.setAttribute("role", "status");
      var text = document.createElement("span");
      text.textContent = (payload.message || "New signals") + ": " +
        (payload.alerts || []).map(function (a) {
          return a.signal + " " + a.symbol;
        }).join(", ") + ". ";
      var link = document.createElement("a");
      link.href = "/scanner/scans/" + encodeURIComponent(payload.scan) + "/";
      link.textContent = "See the scan";
      box.appendChild(text);
      box.appendChild(link);
      notices.appendChild(box);
    }, {
      onOpen: function () {
        notices.setAttribute("data-live", "1");
      },
      onClose: function () {
        notices.removeAttribute("data-live");
      },
    });
  }

  // ---- live scan progress --------------------------------------------------------------
  var root = document.getElementById("scan-live");
  if (!root) {
    return;
  }
  var bar = document.getElementById("scan-progress");
  var fill = bar && bar.querySelector(".progress-bar");
  var stage = document.getElementById("scan-stage");
  var done = document.getElementById("scan-done");
  var total = document.getElementById("scan-total");
  var badge = document.getElementById("scan-status");
  var errorBox = document.getElementById("scan-error");
  var channel = document.getElementById("scan-channel");
  var statusUrl = root.getAttribute("data-status-url");
  var STAGES = {
    queued: "Waiting for a worker",
    symbols: "Choosing the symbols",
    loading: "Loading candles",
    scanning: "Fitting the bands",
    saving: "Saving the alerts",
    done: "Done",
    failed: "Failed",
  };
  var LABELS = { queued: "Queued", running: "Running", completed: "Completed", failed: "Failed" };
  var POLL_MS = 2000;
  var QUIET_MS = 10000;
  var finished = false;
  var pollTimer = null;
  var quietTimer = null;
  var socket = null;

  function isFinal(status) {
    return status === "completed" || status === "failed";
  }

  if (isFinal(root.getAttribute("data-status"))) {
    return; // the server drew the outcome already
  }

  function show(state) {
    if (!state || finished) {
      return;
    }
    var pct = Math.max(0, Math.min(100, Math.round((state.progress || 0) * 100)));
    if (fill) {
      fill.style.width = pct + "%";
    }
    if (bar) {
      bar.setAttribute("aria-valuenow", String(pct));
    }
    if (stage) {
      stage.textContent = STAGES[state.stage] || state.stage || "";
    }
    if (done) {
      done.textContent = String(state.symbols_done || 0);
    }
    if (total) {
      total.textContent = String(state.symbols_total || 0);
    }
    if (badge && state.status) {
      badge.textContent = LABELS[state.status] || state.status;
      badge.className = "badge badge-" + state.status;
    }
    if (errorBox) {
      errorBox.hidden = !state.error;
      errorBox.style.display = state.error ? "" : "none";
      errorBox.textContent = state.error || "";
    }
    if (isFinal(state.status)) {
      finish();
    }
  }

  function finish() {
    finished = true;
    if (pollTimer !== null) {
      window.clearTimeout(pollTimer);
    }
    if (quietTimer !== null) {
      window.clearTimeout(quietTimer);
    }
    if (socket) {
      socket.close();
    }
    if (channel) {
      channel.textContent = "Finished; loading the results…";
    }
    window.setTimeout(function () {
      window.location.reload();
    }, 300);
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
      .then(show)
      .catch(function () {})
      .then(function () {
        if (!finished) {
          pollTimer = window.setTimeout(poll, POLL_MS);
        }
      });
  }

  function startPolling() {
    if (pollTimer === null && !finished) {
      if (channel) {
        channel.textContent = "Live updates unavailable; checking every few seconds.";
      }
      poll();
    }
  }

  function heard() {
    if (quietTimer !== null) {
      window.clearTimeout(quietTimer);
    }
    quietTimer = window.setTimeout(startPolling, QUIET_MS);
  }

  var initial = document.getElementById("scan-initial");
  if (initial) {
    try {
      show(JSON.parse(initial.textContent));
    } catch (err) {
      /* the socket or the poll will tell */
    }
  }
  if (window.openSocket) {
    socket = window.openSocket(
      root.getAttribute("data-socket"),
      function (message) {
        heard();
        show(message);
      },
      {
        onOpen: function () {
          heard();
          if (channel) {
            channel.textContent = "Live.";
          }
        },
        onClose: function () {
          startPolling();
        },
      }
    );
    heard();
  } else {
    startPolling();
  }
})();
