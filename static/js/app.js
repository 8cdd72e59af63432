/*
 * Quantfold: the few behaviours every page shares. No framework, no build step.
 *
 * Globals for page scripts:
 *   openSocket(path, onMessage, options?) -> {send(obj), close(), get socket()}
 *       Opens ws(s)://<this host><path>, parses each message as JSON and hands it to onMessage.
 *       Reconnects with exponential backoff (1 s doubling to 30 s, with jitter) until close()
 *       is called or the server refuses with a 4xxx close code (not signed in, not allowed).
 *       options.onOpen / options.onClose(event) are optional callbacks.
 *   csrfToken() -> string        the Django CSRF token (cookie, else the <meta> in base.html)
 *   csrfFetch(url, init?) -> Promise<Response>
 *       fetch() on this origin with the CSRF header set for unsafe methods.
 *   onReady(fn)                  runs fn once the page is parsed (at once if it already is)
 *   watchSocket(root, onMessage) openSocket on root's data-socket; root's data-socket-state
 *       says open or closed (for tests and the curious)
 *   oneAtATime(load) -> run()
 *       load returns a Promise; run() starts it unless one is in flight, in which case one
 *       more run follows it (bursts coalesce). A failed load is dropped: the next run retries.
 */
(function () {
  "use strict";

  // ---- CSRF -------------------------------------------------------------------------
  function readCookie(name) {
    var parts = document.cookie ? document.cookie.split(";") : [];
    for (var i = 0; i < parts.length; i++) {
      var part = parts[i].trim();
      if (part.substring(0, name.length + 1) === name + "=") {
        return decodeURIComponent(part.substring(name.length + 1));
      }
    }
    return "";
  }

  function csrfToken() {
    // The meta tag wins: it is right even when CSRF_COOKIE_HTTPONLY hides the cookie.
    var meta = document.querySelector('meta[name="csrf-token"]');
    return (meta && meta.content) || readCookie("csrftoken");
  }

  function csrfFetch(url, init) {
    init = init || {};
    var method = (init.method || "GET").toUpperCase();
    var headers = new Headers(init.headers || {});
    if (!/^(GET|HEAD|OPTIONS|TRACE)$/.test(method)) {
      headers.set("X-CSRFToken", csrfToken());
    }
    if (!headers.has("X-Requested-With")) {
      headers.set("X-Requested-With", "XMLHttpRequest");
    }
    init.headers = headers;
    init.credentials = init.credentials || "same-origin";
    return fetch(url, init);
  }

  // ---- Websocket with reconnect -----------------------------------------------------
  var BACKOFF_START_MS = 1000;
  var BACKOFF_MAX_MS = 30000;

  function socketUrl(path) {
    if (/^wss?:\/\//.test(path)) {
      return path;
    }
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    return scheme + window.location.host + (path.charAt(0) === "/" ? path : "/" + path);
  }

  function openSocket(path, onMessage, options) {
    options = options || {};
    var url = socketUrl(path);
    var delay = BACKOFF_START_MS;
    var stopped = false;
    var timer = null;
    var ws = null;

    function scheduleReconnect() {
      if (stopped) {
        return;
      }
      // jitter keeps many tabs from reconnecting in lockstep after a server restart
      var wait = Math.round(delay * (0.75 + Math.random() * 0.5));
      delay = Math.min(delay * 2, BACKOFF_MAX_MS);
      timer = window.setTimeout(connect, wait);
    }

    function connect() {
      timer = null;
      try {
        ws = new WebSocket(url);
      } catch (err) {
        scheduleReconnect();
        return;
      }
      ws.addEventListener("open", function () {
        delay = BACKOFF_START_MS;
        if (options.onOpen) {
          options.onOpen();
        }
      });
      ws.addEventListener("message", function (event) {
        var data;
        try {
          data = JSON.parse(event.data);
        } catch (err) {
          return; // not ours: every server message is JSON
        }
        onMessage(data);
      });
      ws.addEventListener("close", function (event) {
        if (options.onClose) {
          options.onClose(event);
        }
        // 4000-4999 is the application's "no": retrying would be refused the same way
        if (event.code >= 4000 && event.code < 5000) {
          stopped = true;
        }
        scheduleReconnect();
      });
    }

    // A tab coming back from sleep should not wait out a long backoff.
    document.addEventListener("visibilitychange", function () {
      if (!stopped && document.visibilityState === "visible" && timer !== null) {
        window.clearTimeout(timer);
        delay = BACKOFF_START_MS;
        connect();
      }
    });

    connect();

    return {
      send: function (obj) {
        if (ws && ws.readyState === WebSocket.OPEN) {
          ws.send(JSON.stringify(obj));
          return true;
        }
        return false;
      },
      close: function () {
        stopped = true;
        if (timer !== null) {
          window.clearTimeout(timer);
        }
        if (ws) {
          ws.close(1000);
        }
      },
      get socket() {
        return ws;
      },
    };
  }

  // ---- Navigation -------------------------------------------------------------------
  function setupNav() {
    var toggle = document.querySelector(".nav-toggle");
    var nav = toggle && document.getElementById(toggle.getAttribute("aria-controls"));
    if (!toggle || !nav) {
      return;
    }
    function setOpen(open) {
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
      toggle.setAttribute("aria-label", open ? "Close menu" : "Open menu");
      nav.classList.toggle("is-open", open);
    }
    toggle.addEventListener("click", function () {
      setOpen(toggle.getAttribute("aria-expanded") !== "true");
    });
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && nav.classList.contains("is-open")) {
        setOpen(false);
        toggle.focus();
      }
    });
    // leaving the narrow layout must not leave a stale open drawer behind
    var wide = window.matchMedia("(min-width: 861px)");
    var onChange = function () {
      if (wide.matches) {
        setOpen(false);
      }
    };
    if (wide.addEventListener) {
      wide.addEventListener("change", onChange);
    }
  }

  function setupUserMenu() {
    var menus = document.querySelectorAll("details.user-menu");
    if (!menus.length) {
      return;
    }
    // In the narrow layout the menu lives in the drawer and is shown unfolded; on wide screens
    // it is a dropdown that starts closed.
    var narrow = window.matchMedia("(max-width: 860px)");
    var sync = function () {
      menus.forEach(function (menu) {
        menu.open = narrow.matches;
      });
    };
    sync();
    if (narrow.addEventListener) {
      narrow.addEventListener("change", sync);
    }
    document.addEventListener("click", function (event) {
      if (narrow.matches) {
        return;
      }
      menus.forEach(function (menu) {
        if (menu.open && !menu.contains(event.target)) {
          menu.open = false;
        }
      });
    });
    document.addEventListener("keydown", function (event) {
      if (event.key !== "Escape") {
        return;
      }
      menus.forEach(function (menu) {
        if (menu.open) {
          menu.open = false;
          menu.querySelector("summary").focus();
        }
      });
    });
  }

  function setupDismissibleAlerts() {
    document.addEventListener("click", function (event) {
      var button = event.target.closest && event.target.closest(".alert-close");
      if (button) {
        var alert = button.closest(".alert");
        if (alert) {
          alert.remove();
        }
      }
    });
  }

  // Buttons with data-confirm="question" ask before submitting their form.
  function setupConfirm() {
    document.addEventListener("click", function (event) {
      var el = event.target.closest && event.target.closest("[data-confirm]");
      if (el && !window.confirm(el.getAttribute("data-confirm"))) {
        event.preventDefault();
      }
    });
  }

  // ---- Helpers for live pages --------------------------------------------------------
  function onReady(fn) {
    if (document.readyState === "loading") {
      document.addEventListener("DOMContentLoaded", fn);
    } else {
      fn();
    }
  }

  function watchSocket(root, onMessage) {
    return openSocket(root.getAttribute("data-socket"), onMessage, {
      onOpen: function () {
        root.setAttribute("data-socket-state", "open");
      },
      onClose: function () {
        root.setAttribute("data-socket-state", "closed");
      },
    });
  }

  function oneAtATime(load) {
    var busy = false;
    var again = false;
    function run() {
      if (busy) {
        again = true;
        return;
      }
      busy = true;
      load()
        .catch(function () {
          /* the next run tries again */
        })
        .then(function () {
          busy = false;
          if (again) {
            again = false;
            run();
          }
        });
    }
    return run;
  }

  window.openSocket = openSocket;
  window.csrfToken = csrfToken;
  window.csrfFetch = csrfFetch;
  window.onReady = onReady;
  window.watchSocket = watchSocket;
  window.oneAtATime = oneAtATime;
  window.Quantfold = { openSocket: openSocket, csrfToken: csrfToken, csrfFetch: csrfFetch };

  function init() {
    setupNav();
    setupUserMenu();
    setupDismissibleAlerts();
    setupConfirm();
  }

  onReady(init);
})();
