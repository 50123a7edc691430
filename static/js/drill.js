// Revocation drill: while watching (data-watching="true"), poll the drill's status endpoint
// every few seconds and say whether the platform still serves the environment, and, once it
// stopped, after how long. No inline script (strict CSP).
(function () {
  "use strict";
  var EVERY_MS = 3000;
  var MAX_POLLS = 2400;  // two hours

  var card = document.querySelector("[data-status-url][data-watching]");
  if (!card || card.dataset.watching !== "true") { return; }
  var url = card.dataset.statusUrl;
  var state = card.querySelector("[data-drill-state]");
  var polls = 0;

  function say(data) {
    if (data.watching) {
      state.textContent = data.serving
        ? "Watching for " + data.elapsed_seconds + " s: still serving (version " + data.version + ")."
        : "Watching for " + data.elapsed_seconds + " s: not serving right now (" + data.reason + ", KMS unreachable: not counted as a revocation).";
    } else {
      state.textContent = "Stopped serving " + data.measured_seconds + " s after watching started (" + data.reason +
        "); published bound " + data.bound_seconds + " s. Recorded in the audit trail.";
    }
  }

  function poll() {
    polls += 1;
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) {
        if (data) { say(data); card.dataset.watching = data.watching ? "true" : "false"; }
        if ((!data || data.watching) && polls < MAX_POLLS) { setTimeout(poll, EVERY_MS); }
      })
      .catch(function () { if (polls < MAX_POLLS) { setTimeout(poll, EVERY_MS); } });
  }

  poll();
})();
