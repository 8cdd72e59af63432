/*
 * Scanner pages.
 *
 * Watchlist form (#watchlist-form): shows the symbol list or the top-N fields depending on
 * the "Scan" choice (both stay in the form, so nothing is lost when switching back).
 *
 * Scanner and alert pages (#scanner-notices): a notice for each "scanner.alerts" message on
 * the user's notification socket (new BUY/SELL signals of a watchlist that asks for them).
 *
 * Scan page: the symbols done of total, on top of the shared live progress (run_live.js).
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

  // ---- live scan progress: what a scan adds to run_live.js -----------------------------
  var root = document.getElementById("run-live");
  var done = document.getElementById("scan-done");
  var total = document.getElementById("scan-total");
  if (root && done) {
    root.addEventListener("run:message", function (event) {
      var message = event.detail;
      if (typeof message.symbols_done === "number") {
        done.textContent = String(message.symbols_done);
      }
      if (total && typeof message.symbols_total === "number") {
        total.textContent = String(message.symbols_total);
      }
    });
  }
})();
