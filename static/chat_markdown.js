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
// A table column's alignment as a class: a style attribute is dropped under a CSP without 'unsafe-inline'.
markdownParser.core.ruler.push("alignment_as_class", (state) => {
  for (const token of state.tokens) {
    const align = /^text-align:(left|center|right)$/.exec(token.attrGet("style") ?? "")?.[1];
    if (!align) continue;
    token.attrs = token.attrs.filter(([name]) => name !== "style");
    token.attrSet("class", `align-${align}`);
  }
});

// As conversations/markdown.py's ALLOWED_TAGS and ALLOWED_ATTRIBUTES (but code is coloured here, not by
// Pygments, and a column's alignment is a class).
const MARKDOWN_TAGS = [
  "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "li", "ol", "p",
  "pre", "s", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
];
const ATTRIBUTE_RULES = {
  href: (tag) => tag === "A",
  title: (tag) => tag === "A",
  class: (tag, value) =>
    (tag === "CODE" && /^language-[\w#+.-]+$/.test(value)) ||
    ((tag === "TD" || tag === "TH") && /^align-(left|center|right)$/.test(value)),
  start: (tag) => tag === "OL",
};

const MARKDOWN_CONFIG = {
  ALLOWED_TAGS: MARKDOWN_TAGS,
  ALLOWED_ATTR: Object.keys(ATTRIBUTE_RULES),
  ALLOWED_URI_REGEXP: /^(?:(?:https?|mailto):|[^a-z]|[a-z+.-]+(?:[^a-z+.\-:]|$))/i,
  RETURN_DOM_FRAGMENT: true,
};
const markdownPurifier = DOMPurify(window);
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

// What a container shows: each top-level block's HTML and the nodes drawn from it. A block that
// has not changed since the last frame is kept as it is (its colouring, and any text the reader
// selected), so a frame parses the whole text but sanitises and colours only the blocks that changed.
const drawnBlocks = new WeakMap();

function renderMarkdown(container, text) {
  const env = {};
  const blocks = topLevelBlocks(markdownParser.parse(text, env)).map((tokens) =>
    markdownParser.renderer.render(tokens, markdownParser.options, env),
  );
  let drawn = drawnBlocks.get(container);
  if (!drawn || drawn[0]?.nodes[0]?.parentNode !== container) {
    // The first drawing here (replacing the server's), or the container was changed by something else.
    drawn = [];
    container.replaceChildren();
  }
  const changed = blocks.flatMap((html, i) => (drawn[i]?.html === html ? [] : [i]));
  // One sanitiser pass for all the changed blocks, each in a wrapper that markdown-it (raw HTML off) cannot make.
  const wrapped = markdownPurifier.sanitize(changed.map((i) => `<div>${blocks[i]}</div>`).join(""), {
    ...MARKDOWN_CONFIG,
    ALLOWED_TAGS: [...MARKDOWN_TAGS, "div"],
  });
  const fresh = [...wrapped.children].map((wrapper) => [...wrapper.childNodes]);
  let after = null; // the last node of the block before
  blocks.forEach((html, i) => {
    if (drawn[i]?.html !== html) {
      drawn[i]?.nodes.forEach((node) => node.remove());
      const nodes = fresh.shift();
      nodes.forEach(codeBlocksDress);
      if (after) after.after(...nodes);
      else container.prepend(...nodes);
      drawn[i] = { html, nodes };
    }
    after = drawn[i].nodes.at(-1) ?? after;
  });
  drawn.splice(blocks.length).forEach((block) => block.nodes.forEach((node) => node.remove()));
  drawnBlocks.set(container, drawn);
}

// markdown-it's tokens grouped by top-level block (a paragraph, a list, a table, a code block...).
function topLevelBlocks(tokens) {
  const blocks = [];
  let block = [];
  for (const token of tokens) {
    block.push(token);
    if (token.level === 0 && token.nesting <= 0) {
      blocks.push(block);
      block = [];
    }
  }
  return blocks;
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
