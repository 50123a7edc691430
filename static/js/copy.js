// Copy buttons: <button class="copy" data-copy-target="element-id">. No inline scripts
// (the portal's Content-Security-Policy will forbid them).
(function () {
  "use strict";

  function textOf(element) {
    return element.value !== undefined && element.tagName === "INPUT" ? element.value : element.textContent;
  }

  function copy(button) {
    var target = document.getElementById(button.getAttribute("data-copy-target"));
    if (!target) { return; }
    var label = button.textContent;
    var done = function (ok) {
      button.textContent = ok ? "Copied" : "Select and copy";
      window.setTimeout(function () { button.textContent = label; }, 2000);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(textOf(target)).then(function () { done(true); }, function () { done(false); });
    } else if (target.select) {
      target.select();
      done(document.execCommand && document.execCommand("copy"));
    } else {
      done(false);
    }
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-copy-target]");
    if (button) { copy(button); }
  });

  // Select the whole API key on focus, so it is easy to copy by hand too.
  document.querySelectorAll("input[data-api-key]").forEach(function (input) {
    input.addEventListener("focus", function () { input.select(); });
  });
})();
