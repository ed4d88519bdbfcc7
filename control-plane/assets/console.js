// Sluice console: the copy button of the once-shown client key. Loaded as a file (the CSP
// allows no inline script); everything else works without JavaScript.
"use strict";
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  const status = document.getElementById("copy-status");
  field.select();
  try {
    await navigator.clipboard.writeText(field.value);
    if (status) status.textContent = "Copied to the clipboard.";
  } catch {
    // Plain-HTTP pages off localhost have no clipboard API: the key is selected instead.
    if (status) status.textContent = "Selected: press Ctrl+C (or ⌘C) to copy.";
  }
});
