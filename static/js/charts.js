/*
 * Quantfold charts: draws the Plotly figures the server embeds, in the house colours.
 * Needs plotly.min.js (static/vendor/plotly/) loaded first; no other dependency, so the
 * offline HTML report can inline this file as it is.
 *
 * Markup:
 *   <div id="chart-equity" class="qf-chart" data-qf-figure="chart-equity-data"></div>
 *   {{ figure|json_script:"chart-equity-data" }}
 *   Every [data-qf-figure] element is drawn on DOMContentLoaded (or at once if the page has
 *   loaded), responsive to its container's width.
 *
 * Global QFCharts:
 *   QFCharts.render(elementOrId, figure) -> Promise
 *       Draws a {data, layout} figure into the element (replacing what was there).
 *   QFCharts.renderAll(root?)
 *       Draws every [data-qf-figure] element under root (default: document).
 *   QFCharts.appendEquity(elementId, xs, ys)
 *       Live equity while a backtest runs: appends points (xs: epoch milliseconds, ys: equity)
 *       to the first trace of the chart in elementId, creating an empty equity chart there on
 *       the first call. Long runs stay light: past 4,000 points every other old point is
 *       dropped (first and last kept), so the chart never holds more than ~4,000 points.
 *   QFCharts.theme() -> {text, muted, grid, surface, up, down, primary, font}
 *       The colours read from the house CSS variables (with fallbacks for the report).
 *
 * Trade table: inside [data-qf-trades], links marked data-qf-trades-link (sort headers,
 * pagination) load the next table with ?fragment=1 and swap it in place; without JavaScript
 * they are ordinary links to the trade list page.
 */
(function () {
  "use strict";
  if (window.QFCharts) {
    return;
  }

  var LIVE_MAX_POINTS = 4000;

  function cssVar(name, fallback) {
    var value = "";
    try {
      value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    } catch (e) {
      value = "";
    }
    return value || fallback;
  }

  function theme() {
    return {
      text: cssVar("--text", "#142033"),
      muted: cssVar("--text-muted", "#5b6b82"),
      grid: cssVar("--border", "#dde3ec"),
      surface: cssVar("--surface", "#ffffff"),
      neutral: cssVar("--neutral-soft", "#eef1f5"),
      up: cssVar("--up", "#13805b"),
      down: cssVar("--down", "#c62f3a"),
      primary: cssVar("--primary", "#1f63d6"),
      font: cssVar("--font-sans", "system-ui, sans-serif"),
    };
  }

  function axisStyle(axis, t) {
    axis = axis || {};
    axis.gridcolor = axis.gridcolor || t.grid;
    axis.linecolor = axis.linecolor || t.grid;
    axis.zerolinecolor = axis.zerolinecolor || t.grid;
    axis.tickfont = axis.tickfont || { color: t.muted };
    axis.automargin = true;
    return axis;
  }

  // Colours by the role the server put in each trace's meta.
  function styleTraces(data, t) {
    data.forEach(function (trace) {
      var role = (trace.meta && trace.meta.role) || "";
      var side = trace.meta && trace.meta.side;
      var sideColour = side > 0 ? t.up : t.down;
      if (role === "equity") {
        trace.line = Object.assign({ color: t.primary }, trace.line || {});
      } else if (role === "benchmark") {
        trace.line = Object.assign({ color: t.muted }, trace.line || {});
      } else if (role === "drawdown") {
        trace.line = Object.assign({ color: t.down }, trace.line || {});
        trace.fillcolor = trace.fillcolor || "rgba(198, 47, 58, 0.18)";
      } else if (role === "candles") {
        trace.increasing = { line: { color: t.up, width: 1 }, fillcolor: t.up };
        trace.decreasing = { line: { color: t.down, width: 1 }, fillcolor: t.down };
      } else if (role === "entry") {
        trace.marker = Object.assign({}, trace.marker || {}, {
          color: sideColour,
          line: { color: t.surface, width: 1 },
        });
      } else if (role === "exit") {
        trace.marker = Object.assign({}, trace.marker || {}, {
          color: sideColour,
          line: { color: sideColour, width: 2 },
        });
      } else if (role === "histogram") {
        var signs = (trace.meta && trace.meta.sign) || [];
        trace.marker = {
          color: signs.map(function (s) {
            return s === "loss" ? t.down : t.up;
          }),
        };
      } else if (role === "monthly") {
        trace.colorscale = [
          [0, t.down],
          [0.5, t.neutral],
          [1, t.up],
        ];
        trace.textfont = { color: t.text, size: 11 };
      }
    });
    return data;
  }

  function styleLayout(layout, t) {
    layout = Object.assign({}, layout || {});
    layout.paper_bgcolor = "rgba(0,0,0,0)";
    layout.plot_bgcolor = "rgba(0,0,0,0)";
    layout.font = Object.assign({ family: t.font, color: t.text, size: 12 }, layout.font || {});
    if (layout.title && layout.title.text) {
      // The card around each chart already names it.
      layout.title = Object.assign({}, layout.title, { text: "" });
      layout.margin = Object.assign({}, layout.margin || {}, { t: 24 });
    }
    layout.xaxis = axisStyle(layout.xaxis, t);
    layout.yaxis = axisStyle(layout.yaxis, t);
    layout.hoverlabel = layout.hoverlabel || { font: { family: t.font } };
    layout.autosize = true;
    return layout;
  }

  function resolve(el) {
    return typeof el === "string" ? document.getElementById(el) : el;
  }

  var CONFIG = {
    responsive: true,
    displaylogo: false,
    modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d"],
  };

  function render(el, figure) {
    el = resolve(el);
    if (!el || !window.Plotly) {
      return Promise.resolve(null);
    }
    var t = theme();
    var data = styleTraces((figure && figure.data) || [], t);
    var layout = styleLayout(figure && figure.layout, t);
    return window.Plotly.react(el, data, layout, CONFIG).then(function (gd) {
      el.setAttribute("data-qf-drawn", "1");
      return gd;
    });
  }

  function renderAll(root) {
    root = root || document;
    var nodes = root.querySelectorAll("[data-qf-figure]");
    Array.prototype.forEach.call(nodes, function (el) {
      var source = document.getElementById(el.getAttribute("data-qf-figure"));
      if (!source) {
        return;
      }
      try {
        render(el, JSON.parse(source.textContent));
      } catch (e) {
        el.textContent = "This chart could not be drawn.";
        if (window.console) {
          window.console.error(e);
        }
      }
    });
  }

  function liveFigure() {
    return {
      data: [{ type: "scatter", mode: "lines", name: "Equity", x: [], y: [], meta: { role: "equity" } }],
      layout: {
        margin: { l: 60, r: 16, t: 16, b: 40 },
        showlegend: false,
        xaxis: { type: "date" },
        yaxis: { tickformat: ",.0f" },
        hovermode: "x unified",
      },
    };
  }

  function thin(xs, ys) {
    // Keep the first and the last point; drop every other one in between.
    var nx = [xs[0]];
    var ny = [ys[0]];
    for (var i = 2; i < xs.length - 1; i += 2) {
      nx.push(xs[i]);
      ny.push(ys[i]);
    }
    nx.push(xs[xs.length - 1]);
    ny.push(ys[ys.length - 1]);
    return [nx, ny];
  }

  var pending = {};

  function appendEquity(elementId, xs, ys) {
    var el = resolve(elementId);
    if (!el || !window.Plotly || !xs || !ys || !xs.length) {
      return Promise.resolve(null);
    }
    var queued = pending[el.id];
    var ready;
    if (queued) {
      ready = queued;
    } else if (!el.data) {
      ready = render(el, liveFigure());
    } else {
      ready = Promise.resolve(el);
    }
    var next = ready.then(function () {
      var trace = el.data[0];
      var x = (trace.x || []).concat(Array.prototype.slice.call(xs));
      var y = (trace.y || []).concat(Array.prototype.slice.call(ys));
      while (x.length > LIVE_MAX_POINTS) {
        var thinned = thin(x, y);
        x = thinned[0];
        y = thinned[1];
      }
      // Replacing a trace's data makes Plotly guess the axis type again; epoch milliseconds
      // would then read as plain numbers, so the date axis is restated with the data.
      return window.Plotly.update(el, { x: [x], y: [y] }, { "xaxis.type": "date" }, [0]);
    });
    pending[el.id] = next;
    next.then(function () {
      if (pending[el.id] === next) {
        delete pending[el.id];
      }
    });
    return next;
  }

  // ---- trade table: sort and paginate in place -----------------------------------------
  function bindTrades(root) {
    root.addEventListener("click", function (event) {
      var link = event.target.closest ? event.target.closest("a[data-qf-trades-link]") : null;
      if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) {
        return;
      }
      var panel = link.closest("[data-qf-trades]");
      if (!panel || !window.fetch) {
        return;
      }
      event.preventDefault();
      var url = link.getAttribute("href");
      var sep = url.indexOf("?") >= 0 ? "&" : "?";
      panel.setAttribute("aria-busy", "true");
      fetch(url + sep + "fragment=1", { credentials: "same-origin", headers: { "X-Requested-With": "XMLHttpRequest" } })
        .then(function (response) {
          if (!response.ok) {
            throw new Error("HTTP " + response.status);
          }
          return response.text();
        })
        .then(function (html) {
          var holder = document.createElement("div");
          holder.innerHTML = html;
          var fresh = holder.querySelector("[data-qf-trades]");
          if (fresh) {
            panel.replaceWith(fresh);
          }
        })
        .catch(function () {
          window.location.href = url;
        });
    });
  }

  function start() {
    renderAll(document);
    if (document.querySelector("[data-qf-trades]")) {
      bindTrades(document);
    }
  }

  window.QFCharts = {
    render: render,
    renderAll: renderAll,
    appendEquity: appendEquity,
    theme: theme,
  };

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
