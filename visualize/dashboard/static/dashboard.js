// statewf dashboard: live regions over server-sent events, forms sent without a reload,
// diagrams loaded as inline SVG. Everything works without this file, only with reloads.
"use strict";
(function () {
  const base = document.querySelector('meta[name="base"]').content;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const flash = document.getElementById("flash");

  function say(text, bad) {
    if (!flash) return;
    flash.textContent = text;
    flash.className = bad ? "flash bad" : "flash";
    flash.hidden = false;
  }

  function loadDiagrams(root) {
    root.querySelectorAll("[data-src]").forEach(function (box) {
      fetch(box.dataset.src, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (svg) { box.innerHTML = svg; box.classList.add("loaded"); })
        .catch(function () { box.classList.add("failed"); });
    });
  }

  function busyTyping(live) {
    const el = document.activeElement;
    return el && live.contains(el) && (el.tagName === "INPUT" || el.tagName === "TEXTAREA") && el.value;
  }

  function refresh(live) {
    if (busyTyping(live)) return;
    fetch(window.location.href, { headers: { "X-Live": "1" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        live.innerHTML = html;
        bind(live);
        live.dispatchEvent(new CustomEvent("live-updated", { bubbles: true }));
      })
      .catch(function () {});
  }

  function submit(form, submitter) {
    const action = (submitter && submitter.getAttribute("formaction")) || form.action;
    const question = submitter && submitter.dataset.confirm;
    if (question && !window.confirm(question)) return;
    fetch(action, {
      method: "POST",
      body: new FormData(form),
      credentials: "same-origin",
      headers: { "Accept": "application/json", "X-CSRF-Token": csrf },
    })
      .then(function (r) { return r.json(); })
      .then(function (answer) {
        if (!answer.ok) { say(answer.error, true); return; }
        say("done" + (answer.status ? ": " + answer.status : ""), false);
        if (answer.moved) {  // a fork: the new run's page
          window.location.href = answer.moved;
          return;
        }
        const live = document.getElementById("live");
        if (live) refresh(live);
      })
      .catch(function (err) { say("could not send: " + err, true); });
  }

  function bind(root) {
    root.querySelectorAll("form[data-live-form]").forEach(function (form) {
      form.addEventListener("submit", function (ev) {
        ev.preventDefault();
        submit(form, ev.submitter);
      });
    });
    root.querySelectorAll("input[data-autosubmit]").forEach(function (input) {
      input.addEventListener("change", function () { input.form.submit(); });
    });
    loadDiagrams(root);
  }

  document.querySelectorAll("form:not([data-live-form]) button[data-confirm]").forEach(function (b) {
    b.addEventListener("click", function (ev) { if (!window.confirm(b.dataset.confirm)) ev.preventDefault(); });
  });
  bind(document);

  const live = document.getElementById("live");
  if (live && live.dataset.watch && window.EventSource) {
    const url = base + "/live?watch=" + encodeURIComponent(live.dataset.watch) +
      "&since=" + encodeURIComponent(live.dataset.token || "");
    const source = new EventSource(url);
    source.addEventListener("change", function () { refresh(live); });
  }
})();
