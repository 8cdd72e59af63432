/*
 * A grid bot's page: listens on the bot's socket (data-socket on #grid-page). Each message is
 * the bot's whole state (backtester.services.grid_bots.grid_bot_snapshot): the status and its
 * reason, the P&L, and every level, top first; the page redraws them from it, so a level that a
 * trailing grid adds appears, and one that leaves shows as done. Needs app.js (openSocket).
 */
(function () {
  "use strict";

  function byId(id) {
    return document.getElementById(id);
  }

  function show(value) {
    return value === null || value === undefined || value === "" ? "—" : String(value);
  }

  function setText(id, value) {
    var el = byId(id);
    if (el) {
      el.textContent = show(value);
    }
  }

  function cell(tr, value, className) {
    var td = document.createElement("td");
    if (className) {
      td.className = className;
    }
    td.textContent = show(value);
    tr.appendChild(td);
    return td;
  }

  function levelRow(lv) {
    var tr = document.createElement("tr");
    tr.id = "level-" + lv.index;
    tr.setAttribute("data-state", lv.state);
    cell(tr, lv.index, "num");
    cell(tr, lv.price, "num");
    cell(tr, lv.sell_price, "num");
    cell(tr, lv.quantity, "num");
    var state = document.createElement("td");
    var badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = lv.state_display;
    state.appendChild(badge);
    if (lv.note) {
      var note = document.createElement("span");
      note.className = "small muted";
      note.textContent = " " + lv.note;
      state.appendChild(note);
    }
    tr.appendChild(state);
    cell(tr, lv.held, "num");
    var order = document.createElement("td");
    if (lv.order) {
      var code = document.createElement("code");
      code.textContent = lv.order;
      order.appendChild(code);
    } else {
      order.textContent = "—";
    }
    tr.appendChild(order);
    cell(tr, lv.buys, "num");
    cell(tr, lv.sells, "num");
    cell(tr, lv.realized_pnl, "num");
    return tr;
  }

  function draw(msg) {
    var badge = byId("grid-status");
    if (badge && msg.status) {
      badge.className = "badge status-" + msg.status;
      badge.textContent = msg.status_display || msg.status;
      badge.setAttribute("data-status", msg.status);
    }
    var reason = byId("grid-reason");
    if (reason) {
      reason.textContent = msg.status_reason || "";
    }
    setText("grid-profit", msg.grid_profit);
    setText("grid-held", msg.held);
    setText("grid-fees", msg.fees_paid);
    setText(
      "grid-unrealized",
      msg.unrealized === null || msg.unrealized === undefined
        ? null
        : msg.unrealized + " (marked at " + msg.mark + ")"
    );
    if (byId("grid-shifts")) {
      var range = msg.range ? msg.range[0] + " – " + msg.range[1] : "—";
      setText(
        "grid-shifts",
        msg.trail_shifts + " shift" + (msg.trail_shifts === 1 ? "" : "s") + "; range now " + range
      );
    }
    if (msg.last_step_at) {
      setText("grid-last-step", new Date(msg.last_step_at).toLocaleString());
    }
    var body = byId("grid-levels-body");
    if (body && msg.levels) {
      var rows = document.createDocumentFragment();
      msg.levels.forEach(function (lv) {
        rows.appendChild(levelRow(lv));
      });
      body.replaceChildren(rows);
    }
    var page = byId("grid-page");
    if (page) {
      page.setAttribute("data-updates", String(Number(page.getAttribute("data-updates") || 0) + 1));
    }
  }

  function live(state, text) {
    var el = byId("grid-live");
    if (el) {
      el.setAttribute("data-state", state);
      el.textContent = text;
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    var root = byId("grid-page");
    if (!root || !window.openSocket) {
      return;
    }
    window.openSocket(
      root.getAttribute("data-socket"),
      function (msg) {
        if (msg.type === "grid.update" && msg.kind === "state") {
          draw(msg);
        }
      },
      {
        onOpen: function () {
          live("open", "Live");
        },
        onClose: function () {
          live("closed", "Live: reconnecting");
        },
      }
    );
  });
})();
