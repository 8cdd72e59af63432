/*
 * A live bot's page: listens on the bot's socket (data-socket on #bot-page) and keeps the page
 * current. A status message updates the badge and its reason at once, an event is added at the
 * top of the log at once; every message (status, step, order, event) then asks the page's state
 * again (data-state-url, JSON) and redraws the position, P&L, drift, candles with entries and
 * exits, the orders, the fills and the log from it (at most one request in flight).
 * Needs app.js (openSocket, csrfFetch) and charts.js (QFCharts).
 */
(function () {
  "use strict";

  var BADGES = {
    running: "badge-running",
    paused: "badge-queued",
    stopped: "badge-cancelled",
    error: "badge-failed",
  };

  function byId(id) {
    return document.getElementById(id);
  }

  function setText(id, value) {
    var el = byId(id);
    if (el) {
      el.textContent = value === null || value === undefined || value === "" ? "—" : value;
    }
  }

  function cell(tr, value, code) {
    var td = document.createElement("td");
    if (code) {
      var c = document.createElement("code");
      c.textContent = value;
      td.appendChild(c);
    } else {
      td.textContent = value === null || value === undefined ? "—" : value;
    }
    tr.appendChild(td);
    return td;
  }

  function emptyRow(tbody, columns, text) {
    var tr = document.createElement("tr");
    tr.className = "empty-row";
    var td = document.createElement("td");
    td.colSpan = columns;
    td.className = "muted";
    td.textContent = text;
    tr.appendChild(td);
    tbody.appendChild(tr);
  }

  function onStatus(msg) {
    var badge = byId("bot-status");
    if (badge) {
      badge.className = "badge status-" + msg.status + " " + (BADGES[msg.status] || "");
      badge.textContent = msg.status_display || msg.status;
      badge.setAttribute("data-status", msg.status);
    }
    var reason = byId("bot-reason");
    if (reason) {
      reason.textContent = msg.reason || "";
    }
  }

  function eventItem(e) {
    var li = document.createElement("li");
    li.setAttribute("data-level", e.level);
    li.setAttribute("data-kind", e.kind || "");
    var at = document.createElement("span");
    at.className = "small muted";
    at.textContent = (e.at || "").replace("T", " ").replace(/\.\d+Z?$|Z$/, "");
    var level = document.createElement("strong");
    level.textContent = e.level;
    li.appendChild(at);
    li.appendChild(document.createTextNode(" "));
    li.appendChild(level);
    li.appendChild(document.createTextNode(" " + e.message));
    return li;
  }

  function onEvent(e) {
    var list = byId("bot-events");
    if (!list) {
      return;
    }
    var empty = list.querySelector(".empty-row");
    if (empty) {
      empty.remove();
    }
    list.insertBefore(eventItem(e), list.firstChild);
  }

  // Replaces the rows of the table with id tableId: one row(item) a item, or one note across
  // all columns while there are none.
  function redrawTable(tableId, items, columns, emptyText, row) {
    var tbody = document.querySelector("#" + tableId + " tbody");
    if (!tbody) {
      return;
    }
    tbody.textContent = "";
    if (!items.length) {
      emptyRow(tbody, columns, emptyText);
      return;
    }
    items.forEach(function (item) {
      tbody.appendChild(row(item));
    });
  }

  function orderRow(o) {
    var tr = document.createElement("tr");
    tr.setAttribute("data-order", o.id);
    cell(tr, o.client_order_id, true);
    cell(tr, o.bar);
    cell(tr, o.action);
    cell(tr, o.reason);
    cell(tr, o.side);
    cell(tr, o.amount);
    cell(tr, o.filled);
    cell(tr, o.average_price);
    cell(tr, o.fee + " " + o.fee_currency);
    var state = cell(tr, o.state_display);
    if (o.error) {
      var err = document.createElement("span");
      err.className = "small muted";
      err.textContent = " " + o.error;
      state.appendChild(err);
    }
    return tr;
  }

  function restingRow(o) {
    var tr = document.createElement("tr");
    tr.setAttribute("data-order", o.id);
    cell(tr, o.reason === "stop_loss" ? "Stop-loss" : "Take-profit");
    cell(tr, o.client_order_id, true);
    cell(tr, o.amount);
    cell(tr, o.trigger_price);
    cell(tr, o.state_display);
    return tr;
  }

  function fillRow(o) {
    var tr = document.createElement("tr");
    cell(tr, o.bar);
    cell(tr, o.side);
    cell(tr, o.filled);
    cell(tr, o.average_price);
    cell(tr, o.fee + " " + o.fee_currency);
    cell(tr, o.action + " " + o.reason);
    return tr;
  }

  function drawEvents(events) {
    var list = byId("bot-events");
    if (!list) {
      return;
    }
    list.textContent = "";
    if (!events.length) {
      var li = document.createElement("li");
      li.className = "muted empty-row";
      li.textContent = "Nothing logged yet.";
      list.appendChild(li);
      return;
    }
    events.forEach(function (e) {
      list.appendChild(eventItem(e));
    });
  }

  function drawChart(id, figure) {
    var el = byId(id);
    if (!el || !figure || !window.QFCharts) {
      return;
    }
    var placeholder = el.querySelector("p.muted");
    if (placeholder) {
      placeholder.remove();
    }
    window.QFCharts.render(el, figure);
  }

  function apply(state) {
    onStatus({ status: state.status, status_display: state.status_display, reason: state.reason });
    setText("bot-position-amount", state.position);
    setText("bot-entry", state.entry_price ? "@ " + state.entry_price : "");
    setText("bot-cash", state.cash);
    setText("bot-equity", state.equity ? state.equity + " (marked at " + state.mark + ")" : null);
    setText("bot-pnl", state.pnl ? state.pnl + " (" + state.pnl_pct + " %)" : null);
    setText("bot-cursor", state.cursor);
    setText(
      "bot-gap",
      state.gap_pct === null || state.gap_pct === undefined ? null : state.gap_pct.toFixed(2) + " %"
    );
    redrawTable(
      "bot-orders-table",
      state.orders || [],
      10,
      "No orders yet: the bot acts when its rules fire on a closed candle.",
      orderRow
    );
    redrawTable(
      "bot-resting-table",
      state.resting || [],
      5,
      "No resting orders: the bot holds no position with a stop or target on the exchange.",
      restingRow
    );
    redrawTable("bot-fills-table", state.fills || [], 6, "No fills yet.", fillRow);
    drawEvents(state.events || []);
    drawChart("chart-candles", state.candles_figure);
    drawChart("chart-drift", state.drift_figure);
  }

  function start() {
    var root = byId("bot-page");
    if (!root || !window.openSocket) {
      return;
    }
    var url = root.getAttribute("data-state-url");
    var refreshes = 0;

    var refresh = window.oneAtATime(function () {
      return window
        .csrfFetch(url)
        .then(function (r) {
          return r.ok ? r.json() : null;
        })
        .then(function (state) {
          if (state) {
            apply(state);
            refreshes += 1;
            root.setAttribute("data-refreshes", String(refreshes));
          }
        });
    });

    window.watchSocket(root, function (msg) {
      if (msg.kind === "status") {
        onStatus(msg);
      } else if (msg.kind === "event" && msg.event) {
        onEvent(msg.event);
      }
      root.setAttribute("data-last-message", msg.kind);
      if (msg.kind !== "hello") {
        refresh();
      }
    });
  }

  window.onReady(start);
})();
