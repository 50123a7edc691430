// Live re-encryption progress on the environment page: while a job is queued or running
// (data-running="true" on the lifecycle card), poll its progress endpoint and update the
// progress bar, counts and time left in place; when the job's state changes, swap in the
// card's re-rendered body (its buttons change: Pause/Resume, Retire, …). No inline script
// (strict CSP); the bar is a <progress> element, so no style attribute is needed either.
(function () {
  "use strict";
  var FAST_MS = 1000;     // while a job runs
  var SLOW_MS = 10000;    // after FAST_POLLS, in case no worker takes the job
  var FAST_POLLS = 600;   // about ten minutes of fast polling

  var card = document.querySelector("[data-progress-url]");
  if (!card) { return; }
  var url = card.dataset.progressUrl;
  var body = card.querySelector("[data-lifecycle-body]");
  var polls = 0;

  function jobStatus() {
    var el = body.querySelector("[data-job-status]");
    return el ? el.dataset.jobStatus : "";
  }

  function setText(selector, text) {
    var el = body.querySelector(selector);
    if (el) { el.textContent = text; }
  }

  function update(data) {
    var status = data.job ? data.job.status : "";
    if (status !== jobStatus() || !data.running) {
      body.innerHTML = data.html;
    } else {
      var percent = data.percent === null ? 0 : data.percent;
      var bar = body.querySelector("[data-progress-bar]");
      if (bar) { bar.value = percent; bar.textContent = percent + "%"; }
      setText("[data-progress-text]", percent + "%");
      setText("[data-moved]", String(data.job.records_moved));
      setText("[data-remaining]", String(data.remaining));
      setText("[data-eta]", data.eta_text ? data.eta_text : "");
      data.versions.forEach(function (v) {
        var cell = body.querySelector('[data-records-version="' + v.version + '"] [data-count]');
        if (cell) { cell.textContent = String(v.records); }
      });
    }
    card.dataset.running = data.running ? "true" : "false";
    // One status everywhere: status.js brings the key versions table up to date with the
    // statuses this answer read (a version may have changed since the page was rendered).
    document.dispatchEvent(new CustomEvent("portal:version-statuses", { detail: data.versions }));
  }

  function schedule() {
    polls += 1;
    setTimeout(poll, polls > FAST_POLLS ? SLOW_MS : FAST_MS);
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) {
        if (!data) { schedule(); return; }
        update(data);
        if (data.running) { schedule(); }
      })
      .catch(schedule);  // network hiccup: try again later
  }

  if (card.dataset.running === "true") { schedule(); }
})();
