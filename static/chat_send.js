// A message sent, or a control that starts a reply (Edit, Regenerate, Continue), the reply coming in the same
// answer. The form asks for an event stream: the server answers with the turn (the HTML htmx would swap in:
// the message and its pending reply, the branch now on screen, or a new chat's page, where the same headers
// say), then the reply's own events until it ends, so its first words come with no second request before
// them. Any other answer (a refusal, a limit, an outage, an error page) is dealt with as htmx deals with it.
"use strict";

document.addEventListener(
  "submit",
  (event) => {
    const form = event.target;
    // A browser that cannot read a body as it comes leaves the form to htmx: the turn, then the reply's stream.
    if (!window.TextDecoderStream || !form.matches?.("#composer, form[data-starts-reply]")) return;
    event.preventDefault();
    event.stopPropagation(); // htmx's own listener, on the form, would send it again
    // One at a time, as htmx sends a form: Enter again before the answer came sends nothing.
    if (!form.querySelector("button[type=submit]").disabled) replyRequest(form);
  },
  { capture: true },
);

async function replyRequest(form) {
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const response = await fetch(form.action, {
      method: "POST",
      body: new FormData(form),
      headers: { "HX-Request": "true", "HX-Current-URL": window.location.href, Accept: "text/event-stream" },
    });
    if (response.headers.get("Content-Type")?.startsWith("text/event-stream")) {
      await turnThenReply(form, response);
    } else {
      await answeredAsHtmx(form, response);
    }
  } catch {
    showToast("Could not reach the server. Check your connection and try again.");
  } finally {
    button.disabled = false;
  }
}

async function turnThenReply(form, response) {
  let reply = null;
  let offset = 0; // of the reply's text on the page, as the server counts characters
  try {
    for await (const event of serverEvents(response.body)) {
      if (event.type === "turn") {
        const { streamUrl: url, offset: shown } = liveReplyIn(event.data);
        offset = shown || 0; // a continued reply's text so far
        replyFeeds.set(url, (drawing) => (reply = drawing));
        // Settled at once: the reply is fed from here as soon as it is on the page.
        swapAsHtmx(form, response, event.data, { swapDelay: 0, settleDelay: 0 });
        replyFeeds.delete(url);
        const address = response.headers.get("HX-Push-Url"); // a new chat's
        if (address) history.pushState({ htmx: true }, "", address); // as htmx pushes it, for Back to restore
        answered(form, response.status, true);
      } else if (event.type === "delta") {
        offset = event.id;
        reply?.delta(JSON.parse(event.data));
      } else if (event.type === "done") {
        reply?.done();
        return;
      }
    }
  } catch {
    // The connection dropped: the reply goes on, and its own stream carries on from what came.
  }
  if (reply) reply.watch(offset);
  else showToast("The answer was cut off. Reload the page to see your message and its reply.");
}

// Where htmx would swap the answer: where its headers say, else where the form says.
function swapAsHtmx(form, response, html, timing = {}) {
  const target = response.headers.get("HX-Retarget") ?? form.getAttribute("hx-target");
  const swapStyle = response.headers.get("HX-Reswap") ?? form.getAttribute("hx-swap");
  htmx.swap(target, html, { swapStyle, ...timing });
}

function answered(form, status, successful) {
  if (form.id === "composer") composerAnswered(form, status, successful);
  else if (successful && status < 300) scrollToBottom(); // the branch with its new reply, at its end
}

// The live reply's stream and the length of its text (data-offset) in a turn.
function liveReplyIn(html) {
  const turn = document.createElement("template");
  turn.innerHTML = html;
  return turn.content.querySelector("[data-stream-url]").dataset;
}

// The events of the answer's event stream as they come (the server ends its lines with "\n" alone).
async function* serverEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffered += value;
    const blocks = buffered.split("\n\n");
    buffered = blocks.pop(); // what has not ended yet
    for (const block of blocks) {
      const event = { type: "message", data: [], id: "" };
      for (const line of block.split("\n")) {
        const colon = line.indexOf(":");
        if (colon < 1) continue; // a comment (a keep-alive)
        const [name, value] = [line.slice(0, colon), line.slice(colon + 1).replace(/^ /, "")];
        if (name === "event") event.type = value;
        else if (name === "data") event.data.push(value);
        else if (name === "id") event.id = value;
      }
      // An event without data (the stream's opening) says nothing here.
      if (event.data.length) yield { ...event, data: event.data.join("\n") };
    }
  }
}

// What htmx does with the answer (base.html's htmx-config, responseHandling): 204 swaps nothing; a success,
// a refusal (4xx) or an outage (503) is swapped; anything else is an error.
async function answeredAsHtmx(form, response) {
  const status = response.status;
  const swapped = (status >= 200 && status < 300 && status !== 204) || (status >= 400 && status < 500) || status === 503;
  if (swapped) {
    swapAsHtmx(form, response, await response.text());
  } else if (status !== 204) {
    showToast(`The server could not do that (HTTP ${status}). Try again.`);
  }
  answered(form, status, swapped);
}
