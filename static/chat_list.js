// The chat list and the chat's name: per-chat menus, renaming in the list, and the
// name shown in the list, the header and the tab kept in step with the chat's.
// Text is only ever set as text; the markup comes from the server.
"use strict";

function showTabTitle() {
  const name = document.getElementById("chat")?.dataset.chatName;
  document.title = name ? `${name} · Chat` : "Chat";
}

// A chat's new name, wherever the page shows it.
function showChatName(chatId, name) {
  const link = document.querySelector(`#chat-item-${chatId} > a`);
  if (link) link.textContent = name;
  const chat = document.getElementById("chat");
  if (chat?.dataset.chatId !== String(chatId)) return;
  chat.dataset.chatName = name;
  const box = document.getElementById("rename-title");
  if (box && document.activeElement !== box) box.value = name;
  showTabTitle();
}

// Rename in place: the chat's link becomes a text box; Enter saves, Esc gives up.
function renameInList(item) {
  const link = item.querySelector(":scope > a");
  const form = document.createElement("form");
  form.className = "rename-inline";
  const box = document.createElement("input");
  box.name = "title";
  box.value = link.textContent;
  box.maxLength = 200;
  box.required = true;
  box.setAttribute("aria-label", "New name for the chat");
  form.append(box);
  link.hidden = true;
  item.prepend(form);
  box.focus();
  box.select();
  let finished = false;
  const close = () => {
    finished = true;
    form.remove();
    link.hidden = false;
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (finished) return;
    const name = box.value.trim();
    if (!name || name === link.textContent) return close();
    finished = true;
    const chatId = item.id.replace("chat-item-", "");
    htmx
      .ajax("POST", item.dataset.renameUrl, {
        source: item,
        target: "#conversation-list",
        swap: "outerHTML",
        values: { title: name },
      })
      .then(() => {
        const renamed = document.querySelector(`#chat-item-${chatId} > a`);
        if (renamed && !renamed.parentElement.querySelector("[role=alert]")) showChatName(chatId, renamed.textContent);
      });
  });
  box.addEventListener("keydown", (event) => {
    if (event.key === "Escape") close();
  });
  box.addEventListener("blur", () => form.requestSubmit());
}

function closeMenus(except) {
  document.querySelectorAll("details.chat-menu[open]").forEach((menu) => {
    if (menu !== except) menu.open = false;
  });
}

document.addEventListener("click", (event) => {
  const rename = event.target.closest(".menu-rename");
  closeMenus(rename ? null : event.target.closest("details.chat-menu"));
  if (!rename) return;
  event.preventDefault();
  if (rename.dataset.where === "header") {
    const box = document.getElementById("rename-title");
    box.focus();
    box.select();
  } else {
    renameInList(rename.closest(".chat-item"));
  }
});

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") closeMenus(null);
});

// An export downloads and the page stays: put the menu away.
document.addEventListener("submit", (event) => {
  const menu = event.target.closest("details.chat-menu");
  if (menu) menu.open = false;
});

// The title call named the open chat.
document.addEventListener("chat-title", (event) => {
  const chatId = document.getElementById("chat")?.dataset.chatId;
  if (chatId) showChatName(chatId, event.detail.title);
});

// Renamed in the header: the list has the new name already (swapped out of band), the tab follows. (A swap
// chat_send.js makes has no target in its details.)
document.addEventListener("htmx:afterSwap", (event) => {
  if (event.detail.target?.id !== "chat-title" || event.detail.xhr.status >= 300) return;
  const chatId = document.getElementById("chat")?.dataset.chatId;
  const name = document.getElementById("rename-title")?.value;
  if (chatId && name) showChatName(chatId, name);
});

// Another chat opened in place (a new chat's first message): the tab names it.
document.addEventListener("htmx:load", (event) => {
  if (event.detail.elt.id === "chat") showTabTitle();
});

// A message moved its chat to the top of the list: the server sends that chat's item alone (in a
// list of one, out of band) instead of the whole list. Put it first under its day, where the
// whole list would have had it, and drop its old place. While the list shows a search, it is left
// as it is: clearing the search fetches the list afresh.
function chatToTop(list, item, label) {
  if (list.querySelector(".search-results")) return;
  const old = document.getElementById(item.id);
  const oldGroup = old?.parentElement;
  old?.remove();
  if (oldGroup && !oldGroup.children.length) {
    if (oldGroup.previousElementSibling?.matches("h2.chat-group")) oldGroup.previousElementSibling.remove();
    oldGroup.remove();
  }
  list.querySelector("li.muted")?.parentElement.remove(); // "No chats yet."
  const first = list.querySelector(":scope > h2.chat-group");
  let group = first?.textContent === label ? first.nextElementSibling : null;
  if (!group) {
    const heading = document.createElement("h2");
    heading.className = "chat-group";
    heading.textContent = label;
    group = document.createElement("ul");
    list.prepend(heading, group);
  }
  group.prepend(item);
  list.querySelectorAll("a[aria-current]").forEach((link) => {
    if (!item.contains(link)) link.removeAttribute("aria-current");
  });
  htmx.process(item);
}

document.addEventListener("htmx:oobBeforeSwap", (event) => {
  const sent = event.detail.fragment.firstElementChild;
  if (!sent?.dataset.movedTo || event.detail.target.id !== "conversation-list") return;
  event.detail.shouldSwap = false;
  chatToTop(event.detail.target, sent.querySelector(".chat-item"), sent.dataset.movedTo);
});
