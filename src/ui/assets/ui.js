// berth's web UI: copy buttons and confirmations. Pages work without it.
"use strict";

function selectText(element) {
  const range = document.createRange();
  range.selectNodeContents(element);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  const text = source.textContent;
  const show = (label) => {
    button.textContent = label;
    setTimeout(() => { button.textContent = "Copy"; }, 2000);
  };
  selectText(source);
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(() => show("Copied"), () => show("Selected"));
  } else {
    show(document.execCommand("copy") ? "Copied" : "Selected");
  }
});

document.addEventListener("submit", (event) => {
  const question = event.target.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});

document.querySelectorAll("button[data-copy]").forEach((b) => { b.hidden = false; });
