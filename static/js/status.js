// Live status of key versions on the environment page: while a validation runs or is
// queued (data-busy="true"), poll the version's status endpoint and swap in its status
// cell and validation panel, without reloading the page. No inline script (strict CSP).
(function () {
  "use strict";
  var FAST_MS = 1500;          // while a validation runs
  var SLOW_MS = 15000;         // after FAST_POLLS, in case a worker is slow or down
  var FAST_POLLS = 200;        // about five minutes of fast polling

  // One status everywhere: the lifecycle card lists the same versions, so it is
  // re-rendered (by the same partial as the page) whenever a version's status changes.
  function refreshLifecycle() {
    var card = document.querySelector("[data-progress-url]");
    var body = card && card.querySelector("[data-lifecycle-body]");
    if (!body) { return; }
    fetch(card.dataset.progressUrl, { credentials: "same-origin", headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) { if (data && data.html) { body.innerHTML = data.html; } })
      .catch(function () { /* the next change tries again */ });
  }

  function watch(group) {
    if (group.dataset.watching === "true") { return; }
    group.dataset.watching = "true";
    var url = group.dataset.statusUrl;
    var statusCell = group.querySelector("[data-status-cell]");
    var panel = group.querySelector("[data-validation-panel]");
    var polls = 0;

    function schedule() {
      polls += 1;
      setTimeout(poll, polls > FAST_POLLS ? SLOW_MS : FAST_MS);
    }

    function poll() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" }, cache: "no-store" })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (data) {
          if (!data) { schedule(); return; }
          if (statusCell) { statusCell.innerHTML = data.status_html; }
          if (group.dataset.status !== data.status) { refreshLifecycle(); }
          if (panel) { panel.innerHTML = data.panel_html; }
          group.dataset.status = data.status;
          group.dataset.busy = data.busy ? "true" : "false";
          if (data.busy) { schedule(); return; }
          group.dataset.watching = "false";
          // The banner "validation … has started" follows the state: gone once it ended.
          document.querySelectorAll(".msg[data-validation-banner='" + data.version + "']").forEach(function (banner) {
            banner.remove();
          });
        })
        .catch(schedule);  // network hiccup: try again later
    }

    schedule();
  }

  // A banner about a validation that already ended when the page was rendered goes at once.
  document.querySelectorAll(".msg[data-validation-banner]").forEach(function (banner) {
    var group = document.querySelector(".key-version[data-version='" + banner.dataset.validationBanner + "']");
    if (group && group.dataset.busy !== "true") { banner.remove(); }
  });
  document.querySelectorAll("[data-status-url][data-busy='true']").forEach(watch);

  // The lifecycle card re-read the versions (progress.js): a version whose status changed
  // since this table was rendered is fetched again, so both tables say the same.
  document.addEventListener("portal:version-statuses", function (event) {
    (event.detail || []).forEach(function (v) {
      var group = document.querySelector(".key-version[data-version='" + v.version + "']");
      if (group && group.dataset.status !== v.status) { watch(group); }
    });
  });
})();
