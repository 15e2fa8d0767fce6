// Strata console: a little progressive enhancement, no framework.
// - A form with data-target="#id" is sent in the background (with X-Console-Fragment: 1) and the
//   answer replaces the content of #id. Without JavaScript the same form posts normally.
// - An element with data-poll="URL" reloads its content from URL every data-every ms (500 by
//   default) until the answer contains an element with data-done.
// - A button or link with data-confirm asks first.
// - Tab in a code editor (textarea.code) inserts four spaces.
(function () {
  "use strict";
  var FRAGMENT = { "X-Console-Fragment": "1" };

  function send(form, event) {
    var selector = form.getAttribute("data-target");
    if (!selector) return;
    var target = document.querySelector(selector);
    if (!target) return;
    event.preventDefault();
    var data = new FormData(form);
    if (event.submitter && event.submitter.name) data.append(event.submitter.name, event.submitter.value);
    var body = form.enctype === "multipart/form-data" ? data : new URLSearchParams(data);
    var buttons = form.querySelectorAll("button");
    buttons.forEach(function (b) { b.disabled = true; });
    target.setAttribute("aria-busy", "true");
    fetch(form.action, { method: "POST", body: body, headers: FRAGMENT, credentials: "same-origin" })
      .then(function (r) { return r.text(); })
      .then(function (html) { target.innerHTML = html; start(target); })
      .catch(function (e) { target.textContent = "request failed: " + e; })
      .finally(function () {
        buttons.forEach(function (b) { b.disabled = false; });
        target.removeAttribute("aria-busy");
      });
  }

  function poll(el) {
    var url = el.getAttribute("data-poll");
    var every = parseInt(el.getAttribute("data-every") || "500", 10);
    function tick() {
      if (!document.body.contains(el)) return;
      fetch(url, { headers: FRAGMENT, credentials: "same-origin" })
        .then(function (r) { return r.text(); })
        .then(function (html) {
          var stick = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
          el.innerHTML = html;
          var log = el.querySelector("pre");
          if (log && stick) log.scrollTop = log.scrollHeight;
          if (el.querySelector("[data-done]")) return;
          setTimeout(tick, every);
        })
        .catch(function () { setTimeout(tick, every * 4); });
    }
    setTimeout(tick, every);
  }

  function start(root) {
    root.querySelectorAll("[data-poll]").forEach(poll);
    root.querySelectorAll("pre.follow").forEach(function (p) { p.scrollTop = p.scrollHeight; });
  }

  document.addEventListener("submit", function (e) { send(e.target, e); });
  document.addEventListener("click", function (e) {
    var c = e.target.closest("[data-confirm]");
    if (c && !window.confirm(c.getAttribute("data-confirm"))) e.preventDefault();
  });
  document.addEventListener("keydown", function (e) {
    var t = e.target;
    if (e.key !== "Tab" || e.shiftKey || !t.matches || !t.matches("textarea.code")) return;
    e.preventDefault();
    var s = t.selectionStart;
    t.value = t.value.slice(0, s) + "    " + t.value.slice(t.selectionEnd);
    t.selectionStart = t.selectionEnd = s + 4;
  });
  start(document);
})();
