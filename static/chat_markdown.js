// Replies as Markdown, rendered in the browser: the same function draws a reply while it
// streams and once it has ended, so the finished reply is the live one, with no reflow.
// (Rendering on the server per frame costs 1.4 ms for 500 characters and 15 ms for
// 8,000, against a budget of 50 µs per relayed chunk; the server renders a stored reply
// once, for the first paint and for pages without JavaScript: conversations/markdown.py.)
//
// Nothing from a reply runs: markdown-it has raw HTML off and refuses javascript: links,
// then DOMPurify keeps only the tags and attributes the server's allow-list keeps.
"use strict";

const markdownParser = window.markdownit("commonmark", { html: false }).enable(["table", "strikethrough"]);

// As conversations/markdown.py's ALLOWED_TAGS and ALLOWED_ATTRIBUTES (code is coloured here, not by Pygments).
const MARKDOWN_TAGS = [
  "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "li", "ol", "p",
  "pre", "s", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
];
const ATTRIBUTE_RULES = {
  href: (tag) => tag === "A",
  title: (tag) => tag === "A",
  class: (tag, value) => tag === "CODE" && /^language-[\w#+.-]+$/.test(value),
  start: (tag) => tag === "OL",
  style: (tag, value) => (tag === "TD" || tag === "TH") && /^text-align:(left|center|right)$/.test(value),
};

const markdownPurifier = DOMPurify(window);
markdownPurifier.setConfig({
  ALLOWED_TAGS: MARKDOWN_TAGS,
  ALLOWED_ATTR: Object.keys(ATTRIBUTE_RULES),
  ALLOWED_URI_REGEXP: /^(?:(?:https?|mailto):|[^a-z]|[a-z+.-]+(?:[^a-z+.\-:]|$))/i,
  RETURN_DOM_FRAGMENT: true,
});
markdownPurifier.addHook("uponSanitizeAttribute", (node, data) => {
  if (Object.hasOwn(ATTRIBUTE_RULES, data.attrName) && !ATTRIBUTE_RULES[data.attrName](node.nodeName, data.attrValue)) {
    data.keepAttr = false;
  }
});
markdownPurifier.addHook("afterSanitizeAttributes", (node) => {
  if (node.nodeName !== "A") return;
  node.target = "_blank";
  node.rel = "noopener noreferrer nofollow";
});

// highlight.js escapes the code it colours; its spans go through a purifier all the same.
const codePurifier = DOMPurify(window);
codePurifier.setConfig({ ALLOWED_TAGS: ["span"], ALLOWED_ATTR: ["class"], RETURN_DOM_FRAGMENT: true });

// Each top-level node drawn, with the HTML it was drawn from: a block that has not changed
// since the last frame is kept as it is (its colouring, and any text the reader selected).
const drawnFrom = new WeakMap();

function renderMarkdown(container, text) {
  const fresh = [...markdownPurifier.sanitize(markdownParser.render(text)).childNodes];
  const shown = [...container.childNodes];
  fresh.forEach((node, i) => {
    const html = node.outerHTML ?? node.textContent;
    if (shown[i] && drawnFrom.get(shown[i]) === html) return;
    codeBlocksDress(node);
    drawnFrom.set(node, html);
    if (shown[i]) shown[i].replaceWith(node);
    else container.append(node);
  });
  shown.slice(fresh.length).forEach((node) => node.remove());
}

// A code block gets its colours, and above the code a bar with the language and Copy (never on top of the code).
function codeBlocksDress(root) {
  if (root.nodeType !== Node.ELEMENT_NODE) return;
  [...(root.matches("pre") ? [root] : []), ...root.querySelectorAll("pre")].forEach((pre) => {
    const code = pre.querySelector("code");
    if (!code) return;
    const language = /language-(\S+)/.exec(code.className)?.[1] ?? "";
    if (hljs.getLanguage(language)) {
      const coloured = hljs.highlight(code.textContent, { language, ignoreIllegals: true }).value;
      code.replaceChildren(codePurifier.sanitize(coloured));
    }
    // Their words are drawn by CSS, so that text selected and copied from a reply holds only the reply.
    const bar = document.createElement("span");
    bar.className = "code-bar";
    bar.dataset.language = language;
    bar.append(copyButton("code", "Copy"));
    pre.prepend(bar);
  });
}

function copyButton(what, name) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "copy";
  button.dataset.copy = what;
  button.setAttribute("aria-label", name);
  return button;
}
