/*
 * Strategy editor: checks each rule on the server as the user types and shows the error under
 * the field with a caret under the offending column. The parameter table grows with "Add
 * parameter" (a Django formset: the empty row is cloned from a <template>).
 *
 * Server contract (backtester:strategy_validate): POST JSON {expression, field, params:
 * [{name, kind}]} -> {ok, message, col (0-based offset or null), field}.
 */
(function () {
  "use strict";

  var form = document.getElementById("strategy-form");
  if (!form || !window.csrfFetch) {
    return;
  }
  var url = form.getAttribute("data-validate-url");
  var DEBOUNCE_MS = 350;
  var CONTEXT_CHARS = 24; // each side of the caret: the snippet fits a half-width card
  var timers = {};
  var sequence = {};

  function rules() {
    return Array.prototype.slice.call(form.querySelectorAll("textarea[data-rule]"));
  }

  function declaredParams() {
    var out = [];
    form.querySelectorAll("#param-rows .param-row").forEach(function (row) {
      var del = row.querySelector('[data-param="delete"]');
      var name = row.querySelector('[data-param="name"]');
      var kind = row.querySelector('[data-param="kind"]');
      if ((del && del.checked) || !name || !name.value.trim()) {
        return;
      }
      out.push({ name: name.value.trim(), kind: kind ? kind.value : "int" });
    });
    return out;
  }

  function caretView(text, col) {
    // The line holding the offset, cut to a window around it, and a caret under the column.
    var lineStart = text.lastIndexOf("\n", col - 1) + 1;
    var lineEnd = text.indexOf("\n", col);
    if (lineEnd === -1) {
      lineEnd = text.length;
    }
    var line = text.slice(lineStart, lineEnd);
    var at = Math.max(0, col - lineStart);
    var from = Math.max(0, at - CONTEXT_CHARS);
    var to = Math.min(line.length, at + CONTEXT_CHARS);
    var prefix = from > 0 ? "…" : "";
    var shown = prefix + line.slice(from, to) + (to < line.length ? "…" : "");
    var pad = new Array(prefix.length + (at - from) + 1).join(" ");
    return shown + "\n" + pad + "^";
  }

  function show(textarea, state) {
    var field = textarea.closest(".field");
    var box = form.querySelector('[data-feedback-for="' + textarea.name + '"]');
    if (!box) {
      return;
    }
    box.textContent = "";
    if (state.ok === null) {
      if (field) {
        field.classList.remove("has-error");
      }
      textarea.removeAttribute("aria-invalid");
      return;
    }
    if (state.ok) {
      if (field) {
        field.classList.remove("has-error");
      }
      textarea.removeAttribute("aria-invalid");
      var okText = document.createElement("span");
      okText.className = "small pos";
      okText.setAttribute("data-state", "ok");
      okText.textContent = "✓ Valid rule";
      box.appendChild(okText);
      return;
    }
    if (field) {
      field.classList.add("has-error");
    }
    textarea.setAttribute("aria-invalid", "true");
    var list = document.createElement("ul");
    list.className = "field-error";
    list.setAttribute("data-state", "error");
    var item = document.createElement("li");
    item.textContent = state.message;
    list.appendChild(item);
    box.appendChild(list);
    if (typeof state.col === "number") {
      var pre = document.createElement("pre");
      pre.className = "mono small caret-view";
      pre.setAttribute("aria-hidden", "true");
      pre.style.margin = "4px 0 0";
      pre.style.whiteSpace = "pre";
      pre.style.overflowX = "auto";
      pre.textContent = caretView(textarea.value, state.col);
      box.appendChild(pre);
    }
  }

  function check(textarea) {
    var name = textarea.name;
    var text = textarea.value;
    if (!text.trim()) {
      show(textarea, { ok: null });
      return;
    }
    var mine = (sequence[name] || 0) + 1;
    sequence[name] = mine;
    window
      .csrfFetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ expression: text, field: name, params: declaredParams() }),
      })
      .then(function (response) {
        return response.json();
      })
      .then(function (answer) {
        // A slower answer to an older keystroke must not overwrite a newer one.
        if (sequence[name] === mine && textarea.value === text) {
          show(textarea, answer);
        }
      })
      .catch(function () {
        /* offline or server error: the check runs again on submit */
      });
  }

  function schedule(textarea) {
    window.clearTimeout(timers[textarea.name]);
    timers[textarea.name] = window.setTimeout(function () {
      check(textarea);
    }, DEBOUNCE_MS);
  }

  function recheckAll() {
    rules().forEach(schedule);
  }

  rules().forEach(function (textarea) {
    textarea.addEventListener("input", function () {
      schedule(textarea);
    });
  });

  var rows = document.getElementById("param-rows");
  if (rows) {
    rows.addEventListener("input", recheckAll);
    rows.addEventListener("change", recheckAll);
  }

  var add = document.getElementById("add-param");
  var template = document.getElementById("param-template");
  var total = form.querySelector('input[name="param-TOTAL_FORMS"]');
  if (add && template && total && rows) {
    add.addEventListener("click", function () {
      var index = parseInt(total.value, 10) || 0;
      var html = template.innerHTML.replace(/__prefix__/g, String(index));
      var holder = document.createElement("tbody");
      holder.innerHTML = html.trim();
      var row = holder.firstElementChild;
      rows.appendChild(row);
      total.value = String(index + 1);
      var empty = document.getElementById("no-params");
      if (empty) {
        empty.remove();
      }
      var first = row.querySelector("input");
      if (first) {
        first.focus();
      }
    });
  }

  // Show the state of the rules as loaded (an edited strategy may hold an old mistake).
  rules().forEach(function (textarea) {
    if (textarea.value.trim() && !textarea.closest(".has-error")) {
      check(textarea);
    }
  });
})();
