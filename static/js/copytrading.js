/*
 * Copy-trading dashboards, live: the follower's subscription page and the leader's own page
 * listen on their socket (data-socket on #copy-live). Each message says a copy, a decision or
 * a leader fill was stored or changed state; the page then fetches itself again (at most one
 * fetch in flight, bursts coalesced) and swaps in every [data-live] section by id, redrawing
 * the charts inside. Without the socket the page is a plain page: reload to refresh.
 * Needs app.js (openSocket) and charts.js (QFCharts).
 *
 * For tests and the curious: #copy-live carries data-socket-state (open/closed),
 * data-last-message (the last message's kind) and data-refreshes (sections swapped so far).
 */
(function () {
  "use strict";

  var DEBOUNCE_MS = 250;

  function start() {
    var root = document.getElementById("copy-live");
    if (!root || !window.openSocket || !root.getAttribute("data-socket")) {
      return;
    }
    var timer = null;
    var refreshes = 0;

    function swap(html) {
      var doc = new DOMParser().parseFromString(html, "text/html");
      var sections = document.querySelectorAll("#copy-live [data-live]");
      Array.prototype.forEach.call(sections, function (el) {
        var fresh = el.id ? doc.getElementById(el.id) : null;
        if (!fresh) {
          return;
        }
        el.innerHTML = fresh.innerHTML;
        if (window.QFCharts) {
          window.QFCharts.renderAll(el);
        }
      });
      refreshes += 1;
      root.setAttribute("data-refreshes", String(refreshes));
    }

    var refresh = window.oneAtATime(function () {
      return window
        .fetch(window.location.href, {
          credentials: "same-origin",
          headers: { "X-Requested-With": "XMLHttpRequest" },
        })
        .then(function (response) {
          return response.text();
        })
        .then(swap);
    });

    window.watchSocket(root, function (msg) {
      root.setAttribute("data-last-message", msg.kind || "");
      window.clearTimeout(timer);
      timer = window.setTimeout(refresh, DEBOUNCE_MS);
    });
  }

  window.onReady(start);
})();
