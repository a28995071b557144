// The version controls on messages (templates/conversations/_message_controls.html): every control is a form
// that htmx posts, answered with the branch now on screen; this only makes them pleasant to use. The edit box
// sends on Enter as the composer does, Cancel folds it away, and after a swap the view goes where the user
// looks: to the new reply at the bottom, or to the version just picked. Uses within() and scrollToBottom()
// from chat.js.
"use strict";

// The control whose answer is being swapped into #messages (set when it is sent).
let controlSent = null;

document.addEventListener("htmx:beforeRequest", (event) => {
  const form = event.detail.elt;
  if (form.closest?.(".message-controls")) controlSent = form;
});

document.addEventListener("htmx:afterSettle", (event) => {
  if (!controlSent || event.detail.target?.id !== "messages") return;
  const form = controlSent;
  controlSent = null;
  if (form.hasAttribute("data-starts-reply")) {
    scrollToBottom(); // chat.js
  } else if (form.dataset.shows) {
    document.getElementById(form.dataset.shows)?.scrollIntoView({ block: "nearest" });
  }
});

// A reply that just finished is swapped in as its <article> alone (views.message_detail): fetch its controls,
// which go just below it. Messages rendered with the page or a branch have theirs already.
document.addEventListener("htmx:load", (event) => {
  within(event.detail.elt, "article[data-message-url]:not([data-stream-url])").forEach((article) => {
    if (article.nextElementSibling?.classList.contains("message-controls")) return;
    htmx.ajax("GET", `${article.dataset.messageUrl}controls/`, { target: article, swap: "afterend" });
  });
});

document.addEventListener("keydown", (event) => {
  const box = event.target;
  if (!box.closest?.("details.edit") || box.tagName !== "TEXTAREA") return;
  if (event.key === "Escape") {
    box.form.reset();
  } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    box.form.requestSubmit();
  }
});

// "toggle" does not bubble: listen while it goes down instead.
document.addEventListener(
  "toggle",
  (event) => {
    const details = event.target;
    if (!details.matches?.("details.edit") || !details.open) return;
    const box = details.querySelector("textarea");
    box.focus();
    box.setSelectionRange(box.value.length, box.value.length);
  },
  true,
);

document.addEventListener("reset", (event) => {
  const details = event.target.closest?.("details.edit");
  if (details) details.open = false;
});
