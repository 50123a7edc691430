// Role mode on the registration page (issue 14): show the role ARN or the access key fields
// for the chosen mode, and keep the role's policies and commands in step with what is typed.
(function () {
  "use strict";
  var form = document.getElementById("registration-form");
  if (!form) { return; }
  var modes = form.querySelectorAll("input[name=access_mode]");
  function fieldOf(name) {
    var input = form.querySelector("[name=" + name + "]");
    return input ? input.closest(".field") : null;
  }
  function mode() {
    var checked = form.querySelector("input[name=access_mode]:checked");
    return checked ? checked.value : "access_key";
  }
  function apply() {
    var role = mode() === "role";
    ["access_key_id", "secret_access_key"].forEach(function (name) {
      var field = fieldOf(name);
      if (field) { field.hidden = role; }
    });
    var roleField = fieldOf("role_arn");
    if (roleField) { roleField.hidden = !role; }
    var guide = document.getElementById("role-guide");
    if (guide) { guide.hidden = !role; }
    // Texts true for one mode only (setup step 4, the binding note).
    document.querySelectorAll("[data-mode]").forEach(function (el) { el.hidden = el.dataset.mode !== mode(); });
  }
  modes.forEach(function (input) { input.addEventListener("change", apply); });
  apply();

  var ids = { trust_policy: "guide-trust-policy", bound_policy: "guide-role-policy", role_commands: "guide-role-commands",
              bound_cli_command: "guide-bound-cli", binding: "guide-binding" };
  var timer = null;
  var latest = 0;
  function refresh() {
    var ticket = ++latest;
    var value = function (name) { var el = form.querySelector("[name=" + name + "]"); return el ? el.value : ""; };
    var params = new URLSearchParams({ kms_key_arn: value("kms_key_arn"), encryption_context: value("encryption_context"),
                                       role_arn: value("role_arn") });
    fetch(form.dataset.guideUrl + "?" + params.toString(), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data || ticket !== latest) { return; }
        Object.keys(ids).forEach(function (key) {
          var el = document.getElementById(ids[key]);
          if (el && data[key] !== undefined) { el.textContent = data[key]; }
        });
      })
      .catch(function () { /* keep the last guide shown */ });
  }
  ["kms_key_arn", "role_arn", "encryption_context"].forEach(function (name) {
    var el = form.querySelector("[name=" + name + "]");
    if (el) { el.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(refresh, 200); }); }
  });
})();
