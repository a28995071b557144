// The chat page's behaviour on top of htmx: Enter to send, live replies over
// SSE, copy buttons on code blocks. Text from the server is only ever added
// as text nodes; formatted HTML comes from the server, already sanitised.
"use strict";

// Elements matching a selector in a swapped-in fragment, the fragment itself included
// (htmx hands over a new reply's <article> itself).
function within(root, selector) {
  return [...(root.matches?.(selector) ? [root] : []), ...root.querySelectorAll(selector)];
}

function attachReplyStreams(root) {
  within(root, "[data-stream-url]:not([data-attached])").forEach((article) => {
    article.dataset.attached = "true";
    const content = article.querySelector(".content");
    const url = `${article.dataset.streamUrl}?offset=${article.dataset.offset || 0}`;
    // EventSource re-attaches by itself after a drop, sending the last event
    // id (the character offset we have) as Last-Event-ID.
    const source = new EventSource(url);
    source.addEventListener("delta", (event) => {
      const stick = nearBottom();
      content.append(JSON.parse(event.data));
      if (stick) scrollToBottom();
    });
    source.addEventListener("done", () => {
      source.close();
      // The finished reply, rendered as Markdown by the server.
      htmx.ajax("GET", article.dataset.messageUrl, { target: article, swap: "outerHTML" });
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        showToast("Lost the live reply. Reload the page to see it.");
      }
    });
  });
}

// An open chat hears about a reset by staff (from any page or the admin) and shows it.
let chatEvents = null;
function watchChat() {
  const chat = document.getElementById("chat");
  const url = chat?.dataset.eventsUrl;
  if (chatEvents?.url.endsWith(url ?? "")) return;
  chatEvents?.close();
  chatEvents = url ? new EventSource(url) : null;
  chatEvents?.addEventListener("reset", () => window.location.reload());
  // A new name for the chat: chat_list.js shows it.
  chatEvents?.addEventListener("title", (event) => {
    document.dispatchEvent(new CustomEvent("chat-title", { detail: JSON.parse(event.data) }));
  });
}

function addCopyButtons(root) {
  within(root, ".markdown pre:not([data-copy])").forEach((pre) => {
    pre.dataset.copy = "true";
    const button = document.createElement("button");
    button.type = "button";
    button.className = "copy";
    button.textContent = "Copy";
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(pre.querySelector("code")?.innerText ?? pre.innerText);
        button.textContent = "Copied";
      } catch {
        button.textContent = "Copy failed";
      }
      setTimeout(() => (button.textContent = "Copy"), 1500);
    });
    pre.append(button);
  });
}

function nearBottom() {
  const messages = document.getElementById("messages");
  return !messages || messages.scrollHeight - messages.scrollTop - messages.clientHeight < 80;
}

function scrollToBottom() {
  const messages = document.getElementById("messages");
  if (messages) messages.scrollTop = messages.scrollHeight;
}

function showToast(text) {
  const toast = document.getElementById("toast");
  toast.textContent = text;
  toast.hidden = false;
  clearTimeout(showToast.timer);
  showToast.timer = setTimeout(() => (toast.hidden = true), 6000);
}

document.addEventListener("keydown", (event) => {
  const box = event.target;
  if (box.id !== "composer-text" || event.key !== "Enter" || event.shiftKey || event.isComposing) return;
  event.preventDefault();
  box.form.requestSubmit();
});

document.addEventListener("htmx:load", (event) => {
  watchChat();
  attachReplyStreams(event.detail.elt);
  addCopyButtons(event.detail.elt);
});

document.addEventListener("htmx:afterRequest", (event) => {
  const form = event.detail.elt;
  if (form.id === "composer" && event.detail.successful && event.detail.xhr.status < 300) {
    form.querySelector("textarea[name=text]").value = "";
    document.getElementById("composer-errors").replaceChildren();
    document.querySelector("#messages .empty")?.remove();
    scrollToBottom();
  }
});

document.addEventListener("htmx:responseError", (event) => {
  showToast(`The server could not do that (HTTP ${event.detail.xhr.status}). Try again.`);
});

document.addEventListener("htmx:sendError", () => {
  showToast("Could not reach the server. Check your connection and try again.");
});

document.addEventListener("DOMContentLoaded", () => {
  // On a phone the chat list starts folded away, leaving the screen to the chat.
  if (window.matchMedia("(max-width: 700px)").matches) document.getElementById("sidebar")?.removeAttribute("open");
  attachReplyStreams(document);
  addCopyButtons(document);
  scrollToBottom();
});
