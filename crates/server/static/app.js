// modelyard web UI: small progressive enhancement. Every form works without this file.
(function () {
  "use strict";

  // A delete button waits until the confirmation is typed (the server checks it anyway).
  document.querySelectorAll("input[data-confirm]").forEach(function (input) {
    var form = input.form;
    var button = form && form.querySelector("button[type=submit]");
    if (!button) return;
    var check = function () { button.disabled = input.value.trim() !== input.dataset.confirm; };
    input.addEventListener("input", check);
    check();
  });

  // Live prediction status: poll the page's JSON until the prediction has finished.
  var box = document.querySelector("[data-poll]");
  if (!box || box.hasAttribute("data-terminal")) return;
  var url = box.getAttribute("data-poll");
  var field = function (name) { return box.querySelector('[data-field="' + name + '"]'); };
  var terminal = ["succeeded", "failed", "canceled"];
  var delay = 500;

  function show(p) {
    var status = field("status");
    if (status) {
      status.textContent = p.status;
      status.className = "status status-" + p.status;
    }
    var logs = field("logs");
    if (logs && logs.textContent !== (p.logs || "")) logs.textContent = p.logs || "";
    var out = field("output");
    var view = p.output_view;
    if (out && view) {
      out.textContent = "";
      if (view.image) {
        var img = document.createElement("img");
        img.src = view.image;
        img.alt = "Output image";
        out.appendChild(img);
      } else {
        var pre = document.createElement("pre");
        pre.className = "output";
        pre.textContent = view.text;
        out.appendChild(pre);
      }
    }
    var err = field("error");
    if (err) {
      err.textContent = p.error || "";
      err.hidden = !p.error;
    }
    if (terminal.indexOf(p.status) >= 0) {
      var waiting = field("waiting");
      if (waiting) waiting.hidden = true;
      var cancel = field("cancel");
      if (cancel) cancel.hidden = true;
      box.setAttribute("data-terminal", "");
      return true;
    }
    return false;
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (p) {
        if (p && show(p)) return;
        delay = Math.min(delay * 1.5, 5000);
        setTimeout(poll, delay);
      })
      .catch(function () { setTimeout(poll, 5000); });
  }
  setTimeout(poll, delay);
})();
