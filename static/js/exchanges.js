// The add-account form: show the passphrase field and the sandbox switch only for exchanges
// that have them (facts listed in #exchange-facts, from ccxt's requiredCredentials and
// urls.test). Without JavaScript every field stays visible.
(function () {
  "use strict";
  var form = document.getElementById("link-form");
  if (!form) return;
  var select = form.querySelector("select[name=exchange]");
  var facts = {};
  document.querySelectorAll("#exchange-facts [data-exchange]").forEach(function (li) {
    facts[li.dataset.exchange] = { passphrase: li.dataset.passphrase === "1", sandbox: li.dataset.sandbox === "1" };
  });
  function update() {
    var f = facts[select.value] || { passphrase: true, sandbox: true };
    form.querySelectorAll("[data-needs]").forEach(function (el) {
      el.hidden = !f[el.dataset.needs];
      if (el.hidden) el.querySelectorAll("input[type=checkbox]").forEach(function (c) { c.checked = false; });
    });
  }
  select.addEventListener("change", update);
  update();
})();
