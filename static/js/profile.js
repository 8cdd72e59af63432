/*
 * Profile page: the "Test background worker" round trip.
 *
 * The socket opens on page load, before any job is sent, so the worker's answer cannot arrive
 * before anyone listens. The form posts through fetch when JavaScript runs; without it the
 * plain POST still queues the job and the page reloads.
 */
(function () {
  "use strict";

  var form = document.getElementById("selftest-form");
  var result = document.getElementById("selftest-result");
  var status = document.getElementById("socket-status");
  if (!form || !result || !window.openSocket) {
    return;
  }

  var ANSWER_TIMEOUT_MS = 20000;
  var OPEN_WAIT_MS = 3000;
  var connected = false;
  var waiters = [];
  var answerTimer = null;

  function show(el, state, text, badgeClass) {
    el.setAttribute("data-state", state);
    el.textContent = text;
    if (badgeClass) {
      el.className = "badge " + badgeClass;
    }
  }

  function showResult(state, text) {
    result.setAttribute("data-state", state);
    result.textContent = text;
    result.className = "small " + (state === "ok" ? "pos" : state === "error" ? "neg" : "muted");
  }

  function onMessage(message) {
    if (!message || message.kind !== "worker_selftest") {
      return;
    }
    var payload = message.payload || {};
    if (answerTimer !== null) {
      window.clearTimeout(answerTimer);
      answerTimer = null;
    }
    showResult(
      "ok",
      "Worker " + payload.worker + " answered in " + payload.round_trip_ms + " ms."
    );
  }

  window.openSocket("/ws/notifications/", onMessage, {
    onOpen: function () {
      connected = true;
      show(status, "open", "Live: on", "badge-ok");
      waiters.splice(0).forEach(function (fn) {
        fn();
      });
    },
    onClose: function (event) {
      connected = false;
      if (event.code >= 4000 && event.code < 5000) {
        show(status, "refused", "Live: refused", "badge-bad");
      } else {
        show(status, "reconnecting", "Live: reconnecting", "badge-warn");
      }
    },
  });

  // Resolve once the socket is open, or after a short wait so a dead socket never blocks the job.
  function whenConnected(fn) {
    if (connected) {
      fn();
      return;
    }
    var done = false;
    var once = function () {
      if (!done) {
        done = true;
        fn();
      }
    };
    waiters.push(once);
    window.setTimeout(once, OPEN_WAIT_MS);
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var button = form.querySelector("button[type=submit]");
    button.disabled = true;
    showResult("pending", "Queued. Waiting for a worker to answer…");
    whenConnected(function () {
      window
        .csrfFetch(form.action, { method: "POST", body: new FormData(form) })
        .then(function (response) {
          if (!response.ok) {
            throw new Error("HTTP " + response.status);
          }
          answerTimer = window.setTimeout(function () {
            showResult(
              "timeout",
              "No answer after " + ANSWER_TIMEOUT_MS / 1000 + " s: is the worker running?"
            );
          }, ANSWER_TIMEOUT_MS);
        })
        .catch(function (err) {
          showResult("error", "Could not queue the test job (" + err.message + ").");
        })
        .then(function () {
          button.disabled = false;
        });
    });
  });
})();
