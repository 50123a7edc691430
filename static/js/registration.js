// Live setup guide: the CLI command and IAM policy follow the ARN and encryption context as typed.
(function () {
  "use strict";
  var form = document.getElementById("registration-form");
  if (!form) { return; }
  var arn = form.querySelector("[name=kms_key_arn]");
  var context = form.querySelector("[name=encryption_context]");
  var cli = document.getElementById("guide-cli");
  var policy = document.getElementById("guide-policy");
  var timer = null;
  var latest = 0;

  function refresh() {
    var ticket = ++latest;
    var params = new URLSearchParams({ kms_key_arn: arn.value, encryption_context: context ? context.value : "" });
    fetch(form.dataset.guideUrl + "?" + params.toString(), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data || ticket !== latest) { return; }
        cli.textContent = data.cli_command;
        policy.textContent = data.iam_policy;
        // No command or policy for what is not a key ARN (an alias above all): say how to find it.
        var hint = document.getElementById("guide-hint");
        if (hint) { hint.textContent = data.hint || ""; hint.hidden = !data.hint; }
        document.querySelectorAll("[data-guide-block]").forEach(function (block) { block.hidden = !!data.hint; });
      })
      .catch(function () { /* keep the last guide shown */ });
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(refresh, 200);
  }

  arn.addEventListener("input", schedule);
  if (context) { context.addEventListener("input", schedule); }
  // A browser that restores typed values (back button) does not fire "input".
  if (arn.value) { schedule(); }

  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var text = document.getElementById(button.dataset.copy).textContent;
      var done = function () { button.textContent = "Copied"; setTimeout(function () { button.textContent = "Copy"; }, 1500); };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done);
      } else {
        var area = document.createElement("textarea");
        area.value = text; document.body.appendChild(area); area.select();
        document.execCommand("copy"); document.body.removeChild(area); done();
      }
    });
  });
})();
