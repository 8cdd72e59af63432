/*
 * The new API key page: copy the key (shown once) to the clipboard. Without JavaScript the
 * key can still be selected by hand. (Revoking asks first through app.js's data-confirm.)
 */
(function () {
  "use strict";

  function copyText(input) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(input.value);
    }
    // Plain-HTTP fallback: select the field and use the legacy copy command.
    input.focus();
    input.select();
    return document.execCommand("copy") ? Promise.resolve() : Promise.reject(new Error("copy"));
  }

  var button = document.getElementById("api-key-copy");
  if (button) {
    var input = document.getElementById(button.getAttribute("data-copy-target"));
    var status = document.getElementById("api-key-copy-status");
    input.addEventListener("focus", function () {
      input.select();
    });
    button.addEventListener("click", function () {
      copyText(input).then(
        function () {
          button.textContent = "Copied";
          status.textContent = "The key is on your clipboard.";
        },
        function () {
          input.focus();
          input.select();
          status.textContent = "Copy did not work here: press Ctrl+C (⌘C) to copy the selected key.";
        }
      );
    });
  }
})();
