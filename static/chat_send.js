// A message sent, its reply coming in the same answer. The composer asks for an event stream: the server
// answers with the turn (the message and its pending reply, or a new chat's page: the HTML htmx would swap in,
// where the same headers say), then the reply's own events until it ends, so its first words come with no
// second request before them. Any other answer (a refusal, a limit, an outage, an error page) is dealt with
// as htmx deals with it.
"use strict";

document.addEventListener(
  "submit",
  (event) => {
    const form = event.target;
    if (form.id !== "composer") return;
    event.preventDefault();
    event.stopPropagation(); // htmx's own listener, on the form, would send it again
    messageSend(form);
  },
  { capture: true },
);

async function messageSend(form) {
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
  let offset = 0; // of the reply's text received, as the server counts characters
  try {
    for await (const event of serverEvents(response.body)) {
      if (event.type === "turn") {
        const url = streamUrlIn(event.data);
        replyFeeds.set(url, (drawing) => (reply = drawing));
        // Settled at once: the reply is fed from here as soon as it is on the page.
        const swapStyle = response.headers.get("HX-Reswap") ?? "beforeend";
        htmx.swap(swapTarget(response), event.data, { swapStyle, swapDelay: 0, settleDelay: 0 });
        replyFeeds.delete(url);
        const address = response.headers.get("HX-Push-Url"); // a new chat's
        if (address) history.pushState({ htmx: true }, "", address); // as htmx pushes it, for Back to restore
        composerAnswered(form, response.status, true);
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
  reply?.watch(offset);
}

function swapTarget(response) {
  return response.headers.get("HX-Retarget") ?? "#messages"; // the composer's hx-target
}

function streamUrlIn(html) {
  const turn = document.createElement("template");
  turn.innerHTML = html;
  return turn.content.querySelector("[data-stream-url]")?.dataset.streamUrl;
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

// What htmx does with the composer's answer (base.html's htmx-config, responseHandling): 204 swaps nothing;
// a success, a refusal (4xx) or an outage (503) is swapped where its headers say, else at the chat's end;
// anything else is an error.
async function answeredAsHtmx(form, response) {
  const status = response.status;
  const swapped = (status >= 200 && status < 300 && status !== 204) || (status >= 400 && status < 500) || status === 503;
  if (swapped) {
    const swapStyle = response.headers.get("HX-Reswap") ?? "beforeend";
    htmx.swap(swapTarget(response), await response.text(), { swapStyle });
  } else if (status !== 204) {
    showToast(`The server could not do that (HTTP ${status}). Try again.`);
  }
  composerAnswered(form, status, swapped);
}
