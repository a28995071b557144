// Images for the composer: "Attach image" (or pasting or dropping images onto the composer)
// adds them, each shown as a thumbnail with a Remove button until the message is sent. The
// control is offered only while the model picked takes images. The server checks every image
// again; this only shows what will be sent.
"use strict";

function attachInput() {
  return document.querySelector("#composer input[name=images]");
}

// The files to send live in the input itself, so that htmx and a page without JavaScript send them alike.
function attachedSet(input, files) {
  const transfer = new DataTransfer();
  files.forEach((file) => transfer.items.add(file));
  input.files = transfer.files;
  input.kept = files;
  attachedShow(input);
}

function attachedShow(input) {
  const list = document.getElementById("attachments");
  if (!list) return;
  list.replaceChildren(
    ...input.kept.map((file, index) => {
      const item = document.createElement("li");
      const thumbnail = document.createElement("img");
      thumbnail.alt = file.name;
      // A data: URL: the page's policy allows no blob: images.
      const reader = new FileReader();
      reader.addEventListener("load", () => (thumbnail.src = reader.result));
      reader.readAsDataURL(file);
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "attachment-remove";
      remove.dataset.index = index;
      remove.setAttribute("aria-label", `Remove ${file.name}`);
      remove.textContent = "×";
      item.append(thumbnail, remove);
      return item;
    }),
  );
  list.hidden = !input.kept.length;
}

function attachedAdd(files) {
  const input = attachInput();
  const images = [...files].filter((file) => file.type.startsWith("image/"));
  if (!input || input.closest("label").hidden || !images.length) return false;
  attachedSet(input, [...(input.kept ?? []), ...images]);
  return true;
}

document.addEventListener("change", (event) => {
  const input = event.target;
  if (input.matches?.("#composer input[name=images]")) {
    // A new choice adds to the images already attached rather than replacing them.
    attachedSet(input, [...(input.kept ?? []), ...input.files]);
  } else if (input.id === "composer-model") {
    const attach = attachInput()?.closest("label");
    if (!attach) return;
    attach.hidden = !input.selectedOptions[0]?.hasAttribute("data-images");
    if (attach.hidden) attachedSet(attachInput(), []);
  }
});

document.addEventListener("click", (event) => {
  const remove = event.target.closest?.("#attachments .attachment-remove");
  if (!remove) return;
  const input = attachInput();
  attachedSet(
    input,
    input.kept.filter((_, index) => index !== Number(remove.dataset.index)),
  );
});

document.addEventListener("paste", (event) => {
  if (event.target.id === "composer-text" && attachedAdd(event.clipboardData?.files ?? [])) event.preventDefault();
});

document.addEventListener("dragover", (event) => {
  if (event.target.closest?.("#composer") && attachInput() && !attachInput().closest("label").hidden) {
    event.preventDefault();
  }
});

document.addEventListener("drop", (event) => {
  if (event.target.closest?.("#composer") && attachedAdd(event.dataTransfer?.files ?? [])) event.preventDefault();
});

// Sent: the images went with the message.
document.addEventListener("message-sent", () => {
  const input = attachInput();
  if (input) attachedSet(input, []);
});
