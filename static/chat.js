// The chat page's behaviour on top of htmx: Enter to send, live replies over SSE drawn
// as Markdown (chat_markdown.js), Stop in Send's place while a reply streams, the view
// kept at the latest text, copy buttons. Text from the server is only ever added as text
// nodes; formatted HTML comes from the sanitising renderer or from the server.
"use strict";

// Elements matching a selector in a swapped-in fragment, the fragment itself included
// (htmx hands over a new reply's <article> itself).
function within(root, selector) {
  return [...(root.matches?.(selector) ? [root] : []), ...root.querySelectorAll(selector)];
}

// The reply this page is watching stream in, if any: Stop stops it.
let liveReply = null;

// Replies whose events come in the answer of the message that started them (chat_send.js), by stream URL:
// each is handed the reply's drawing to feed, instead of opening the reply's own stream.
const replyFeeds = new Map();

function attachReplyStreams(root) {
  within(root, "[data-stream-url]:not([data-attached])").forEach((article) => {
    article.dataset.attached = "true";
    // The text so far, as the server sent it (what a page without JavaScript shows), and then as it streams:
    // it stays the reply's source, and the rendered view beside it takes its place on screen.
    const source = article.querySelector(".content.streaming");
    const view = document.createElement("div");
    view.className = "content markdown";
    source.after(view);
    source.hidden = true;
    const drawing = liveDrawing(view, source);
    drawing.now();
    replyStarted(article);
    const reply = {
      delta(text) {
        source.append(text);
        drawing.soon();
      },
      done() {
        drawing.now();
        replyEnded(article);
        // The finished reply's notices and usage; its text is drawn again by the same renderer, from the same
        // text, so it looks exactly as it did live. No settle delay: nothing is painted in between.
        htmx.ajax("GET", article.dataset.messageUrl, { target: article, swap: "outerHTML settle:0ms" });
      },
      // Its own stream, from `offset` characters on (as the server counts them).
      watch(offset) {
        watchReply(`${article.dataset.streamUrl}?offset=${offset}`, reply, article);
      },
    };
    const feed = replyFeeds.get(article.dataset.streamUrl);
    if (feed) feed(reply);
    else reply.watch(article.dataset.offset || 0);
  });
}

function watchReply(url, reply, article) {
  // EventSource re-attaches by itself after a drop, sending the last event
  // id (the character offset we have) as Last-Event-ID.
  const events = new EventSource(url);
  events.addEventListener("delta", (event) => reply.delta(JSON.parse(event.data)));
  events.addEventListener("done", () => {
    events.close();
    reply.done();
  });
  events.addEventListener("error", () => {
    if (events.readyState === EventSource.CLOSED) {
      replyEnded(article);
      showToast("Lost the live reply. Reload the page to see it.");
    }
  });
}

// Draws a streaming reply at most once a frame, and less often when a long reply makes a drawing costly.
function liveDrawing(view, source) {
  let due = false;
  let cost = 0;
  let drawnAt = 0;
  const draw = () => {
    if (!due) return;
    due = false;
    const start = performance.now();
    renderMarkdown(view, source.textContent);
    drawnAt = performance.now();
    cost = drawnAt - start;
    textArrived();
  };
  return {
    soon() {
      if (due) return;
      due = true;
      setTimeout(() => requestAnimationFrame(draw), Math.max(0, drawnAt + 3 * cost - performance.now()));
    },
    now() {
      due = true;
      draw();
    },
  };
}

function sendButton() {
  return document.querySelector("#composer button[type=submit]");
}

function stopButton() {
  return document.querySelector("#composer button.stop");
}

// While a reply streams, Stop takes Send's place: Send cannot be pressed, so there is nothing to refuse.
function replyStarted(article) {
  liveReply = article;
  if (sendButton()) sendButton().hidden = true;
  if (stopButton()) stopButton().hidden = false;
}

function replyEnded(article) {
  if (liveReply !== article) return;
  liveReply = null;
  if (sendButton()) sendButton().hidden = false;
  if (stopButton()) stopButton().hidden = true;
  // "Wait for the reply to finish" no longer holds.
  const errors = document.getElementById("composer-errors");
  if (errors?.dataset.status === "409") errors.replaceChildren();
}

function replyStop() {
  if (!liveReply?.isConnected) return;
  htmx.ajax("POST", liveReply.dataset.stopUrl, { swap: "none" });
}

// Draws the stored replies in a fragment (or the page) with the renderer live replies use. The latest
// (on screen, or a reply that just finished) at once; older ones, which show the server's rendering
// meanwhile, when the browser is idle, so that a long chat opens without a pause.
const whenIdle = window.requestIdleCallback ?? ((work) => setTimeout(() => work({ timeRemaining: () => 10 }), 0));
const AT_ONCE = 3;

function renderStoredReplies(root) {
  const contents = within(root, ".content.markdown[data-source]").reverse();
  const draw = (content) => renderMarkdown(content, content.dataset.source);
  contents.splice(0, AT_ONCE).forEach(draw);
  const drawSome = (deadline) => {
    while (contents.length && deadline.timeRemaining() > 2) draw(contents.shift());
    if (contents.length) whenIdle(drawSome);
  };
  if (contents.length) whenIdle(drawSome);
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

// A Copy button on each finished message, first among its tools (the row is made if the page has none):
// a reply copies as the Markdown it was written in.
function addMessageCopyButtons(root) {
  within(root, "article.message:not([data-stream-url])").forEach((article) => {
    let tools = article.querySelector(":scope > .message-tools");
    if (tools?.querySelector("[data-copy=message]")) return;
    if (!tools) {
      tools = document.createElement("div");
      tools.className = "message-tools";
      article.append(tools);
    }
    tools.prepend(copyButton("message", "Copy message"));
  });
}

function copiedText(button) {
  if (button.dataset.copy === "code") return button.closest("pre").querySelector("code").textContent;
  const article = button.closest("article");
  return article.querySelector(".content[data-source]")?.dataset.source ?? article.querySelector(".content").textContent;
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest?.("button[data-copy]");
  if (!button) return;
  try {
    await navigator.clipboard.writeText(copiedText(button));
    button.dataset.state = "copied";
  } catch {
    button.dataset.state = "failed";
  }
  setTimeout(() => delete button.dataset.state, 1500);
});

// Whether the reader is at the latest text. A reader who scrolled up to read stays where they are;
// when text then arrives below, "Jump to latest" brings them down.
let following = true;

function nearBottom() {
  const messages = document.getElementById("messages");
  return !messages || messages.scrollHeight - messages.scrollTop - messages.clientHeight < 80;
}

function scrollToBottom() {
  const messages = document.getElementById("messages");
  if (messages) messages.scrollTop = messages.scrollHeight;
  following = true;
  const jump = document.getElementById("jump-latest");
  if (jump) jump.hidden = true;
}

// After anything that changed the height of the chat: keep a following reader at the end.
function textArrived() {
  if (following) scrollToBottom();
  else document.getElementById("jump-latest")?.removeAttribute("hidden");
}

document.addEventListener(
  "scroll",
  (event) => {
    if (event.target.id !== "messages") return;
    following = nearBottom();
    if (following) document.getElementById("jump-latest")?.setAttribute("hidden", "");
  },
  { capture: true, passive: true },
);

function showToast(text) {
  const toast = document.getElementById("toast");
  toast.textContent = text;
  toast.hidden = false;
  clearTimeout(showToast.timer);
  showToast.timer = setTimeout(() => (toast.hidden = true), 6000);
}

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && liveReply) {
    event.preventDefault();
    replyStop();
    return;
  }
  const box = event.target;
  if (box.id !== "composer-text" || event.key !== "Enter" || event.shiftKey || event.isComposing) return;
  event.preventDefault();
  if (!liveReply) box.form.requestSubmit(); // while a reply streams, what was typed waits for it
});

document.addEventListener("click", (event) => {
  if (event.target.closest?.("#composer button.stop")) replyStop();
  else if (event.target.closest?.("#jump-latest")) scrollToBottom();
});

// What each new part of the page needs, whether it came with the page or from htmx.
function pagePartReady(root) {
  watchChat();
  renderStoredReplies(root);
  addMessageCopyButtons(root);
  attachReplyStreams(root);
}

document.addEventListener("htmx:load", (event) => {
  if (event.detail.elt === document.body) return; // the page itself: done on DOMContentLoaded
  pagePartReady(event.detail.elt);
  textArrived();
});

document.addEventListener("htmx:afterRequest", (event) => {
  const form = event.detail.elt;
  if (form.id === "composer") composerAnswered(form, event.detail.xhr.status, event.detail.successful);
});

// The composer's message was answered (in chat_send.js, or by htmx in a browser it leaves to htmx): a message
// sent clears it.
function composerAnswered(form, status, successful) {
  const errors = document.getElementById("composer-errors");
  errors.dataset.status = status;
  if (status === 409 && !liveReply) {
    // A reply started elsewhere (another tab) is streaming: show it here, with Stop, until it ends.
    htmx.ajax("GET", window.location.pathname, { target: "#messages", select: "#messages > *", swap: "innerHTML" });
  } else if (successful && status < 300) {
    form.querySelector("textarea[name=text]").value = "";
    errors.replaceChildren();
    document.querySelector("#messages .empty")?.remove();
    scrollToBottom();
    document.dispatchEvent(new CustomEvent("message-sent"));
  }
}

document.addEventListener("htmx:responseError", (event) => {
  showToast(`The server could not do that (HTTP ${event.detail.xhr.status}). Try again.`);
});

document.addEventListener("htmx:sendError", () => {
  showToast("Could not reach the server. Check your connection and try again.");
});

document.addEventListener("DOMContentLoaded", () => {
  // On a phone the chat list starts folded away, leaving the screen to the chat.
  if (window.matchMedia("(max-width: 700px)").matches) document.getElementById("sidebar")?.removeAttribute("open");
  pagePartReady(document);
  scrollToBottom();
});
