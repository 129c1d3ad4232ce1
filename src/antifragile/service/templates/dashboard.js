// The operator's dashboard: fetches its panels again every few seconds and sends the
// dead-letter buttons without leaving the page. No framework, nothing loaded from elsewhere.
(function () {
  "use strict";
  var panels = document.getElementById("panels");
  if (!panels) return;
  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.getAttribute("content") : "";
  var every = Math.max(1, Number(panels.getAttribute("data-refresh") || "3")) * 1000;
  var status = document.getElementById("status");
  var notice = document.getElementById("notice");
  var busy = false;
  var again = false;

  function say(text) {
    notice.textContent = text;
    notice.hidden = !text;
  }

  function editing() {
    // an open "Resolve" form or a focused field is never replaced under the operator's hands
    var active = document.activeElement;
    if (active && panels.contains(active) && active.tagName === "INPUT") return true;
    // nor are ticked jobs (bulk actions) or an open "Resolve" form
    if (panels.querySelector('input[type="checkbox"]:checked') !== null) return true;
    return panels.querySelector("details[open]") !== null;
  }

  function refresh(force) {
    if (busy) {
      again = again || force;
      return Promise.resolve();
    }
    if (!force && editing()) return Promise.resolve();
    busy = true;
    var query = new URLSearchParams(location.search);
    query.delete("notice");
    return fetch("/dashboard/panels?" + query.toString(), {
      headers: { Accept: "text/html" },
      credentials: "same-origin",
      cache: "no-store",
    })
      .then(function (response) {
        if (response.status === 401) {
          location.assign("/dashboard/login");
          return;
        }
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text().then(function (html) {
          panels.innerHTML = html;
          status.textContent = "";
        });
      })
      .catch(function (error) {
        status.textContent = "refresh failed (" + error.message + "); retrying";
      })
      .finally(function () {
        busy = false;
        if (again) {
          again = false;
          refresh(true);
        }
      });
  }

  panels.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.hasAttribute("data-action")) return;
    event.preventDefault();
    var buttons = form.querySelectorAll("button");
    buttons.forEach(function (b) { b.disabled = true; });
    fetch(form.action, {
      method: "POST",
      body: new URLSearchParams(new FormData(form)),
      headers: { Accept: "application/json", "X-CSRF-Token": csrf },
      credentials: "same-origin",
    })
      .then(function (response) {
        return response.json().then(function (body) {
          if (body.success) {
            var action = form.getAttribute("data-action");
            var what = action === "retry" ? "back in the queue" : action === "mark-sent" ? "resolved, its reply marked as sent" : "resolved";
            say("Job " + body.data.job.id.slice(-10) + " is " + what + ".");
          } else {
            say(body.error.message);
          }
        });
      })
      .catch(function () {
        say("The service did not answer; try again.");
      })
      .finally(function () {
        var open = form.closest("details");
        if (open) open.open = false;
        if (document.activeElement) document.activeElement.blur();
        refresh(true);
        // a redriven job usually runs within a moment: show its outcome without the full wait
        setTimeout(function () { refresh(false); }, 800);
      });
  });

  setInterval(refresh, every);
})();
