// The API keys page: a Copy button for a new key, which the page shows only once.
"use strict";

// Without JavaScript the key can still be selected and copied by hand; the button needs the clipboard API.
document.addEventListener("htmx:load", (event) => {
  event.target.querySelectorAll("[data-copy-from][hidden]").forEach((button) => (button.hidden = false));
});

document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy-from]");
  if (!button) return;
  const field = document.getElementById(button.dataset.copyFrom);
  field.select();
  try {
    await navigator.clipboard.writeText(field.value);
    button.textContent = "Copied";
  } catch {
    button.textContent = "Select it and copy";
  }
  setTimeout(() => (button.textContent = "Copy"), 2000);
});

document.addEventListener("focusin", (event) => {
  if (event.target.matches("input.secret")) event.target.select();
});
