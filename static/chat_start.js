// An empty chat's help to start: an example prompt, clicked, goes into the message
// box; the model named is the one picked in the composer.
"use strict";

document.addEventListener("click", (event) => {
  const example = event.target.closest("button.example");
  if (!example) return;
  const box = document.getElementById("composer-text");
  box.value = example.dataset.prompt;
  box.focus();
});

document.addEventListener("change", (event) => {
  if (event.target.id !== "composer-model") return;
  const name = document.querySelector("#messages .empty-model");
  if (name) name.textContent = event.target.selectedOptions[0].textContent;
});
