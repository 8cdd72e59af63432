/*
 * Risk dashboard live updates: listens on the user's own risk socket (data-socket on
 * #risk-dashboard) and applies each message: a state change updates the badge and reason,
 * a denied order is added at the top of the list, an equity reading extends the chart, a
 * kill-switch report is shown as a line. Needs app.js (openSocket) and charts.js.
 */
(function () {
  "use strict";

  function text(tag, value, cls) {
    var el = document.createElement(tag);
    el.textContent = value;
    if (cls) {
      el.className = cls;
    }
    return el;
  }

  var LABELS = { active: "Active", reducing: "Reducing only", halted: "Halted" };
  var BADGES = { active: "badge-buy", reducing: "badge-hold", halted: "badge-sell" };

  function onState(msg) {
    if (msg.account !== null && msg.account !== undefined) {
      return; // the page header shows the user-wide state; account rows refresh on reload
    }
    var holder = document.getElementById("risk-state");
    if (!holder) {
      return;
    }
    holder.setAttribute("data-state", msg.state);
    var badge = holder.querySelector(".badge");
    if (badge) {
      badge.className = "badge " + (BADGES[msg.state] || "");
      badge.textContent = LABELS[msg.state] || msg.state;
    }
    var reason = document.getElementById("risk-state-reason");
    if (reason) {
      reason.textContent = msg.reason || "";
    }
  }

  function onDenied(msg) {
    var list = document.getElementById("denials");
    if (!list) {
      return;
    }
    var empty = list.querySelector(".muted");
    if (empty) {
      empty.remove();
    }
    var li = document.createElement("li");
    li.setAttribute("data-code", msg.code);
    li.appendChild(text("span", "now " + msg.side + " " + msg.symbol + ": "));
    li.appendChild(text("strong", msg.code));
    li.appendChild(text("span", " — " + msg.reason));
    list.insertBefore(li, list.firstChild);
  }

  function onEquity(msg) {
    if (msg.account !== null && msg.account !== undefined) {
      return;
    }
    var none = document.getElementById("no-equity");
    if (none) {
      none.remove();
    }
    if (window.QFCharts) {
      window.QFCharts.appendEquity("chart-equity", [msg.x], [msg.y]);
    }
  }

  function onKillSwitch(msg) {
    var root = document.getElementById("risk-dashboard");
    if (root) {
      root.insertBefore(text("p", "Kill switch: " + msg.status, "alert"), root.firstChild);
    }
  }

  function start() {
    var root = document.getElementById("risk-dashboard");
    if (!root || !window.openSocket) {
      return;
    }
    window.watchSocket(root, function (msg) {
      if (msg.kind === "state") {
        onState(msg);
      } else if (msg.kind === "denied") {
        onDenied(msg);
      } else if (msg.kind === "equity") {
        onEquity(msg);
      } else if (msg.kind === "kill_switch") {
        onKillSwitch(msg);
      }
      root.setAttribute("data-last-message", msg.kind);
    });
  }

  window.onReady(start);
})();
