// Rounds page: while the latest round runs, follow its log and state (polls the round API).
(function () {
  "use strict";
  const box = document.getElementById("round-log");
  if (!box || !box.dataset.active) return;
  const text = document.getElementById("round-log-text");
  const state = document.getElementById("round-state");
  async function poll() {
    try {
      const response = await fetch(box.dataset.url, { credentials: "same-origin" });
      if (response.ok) {
        const round = await response.json();
        text.textContent = round.log; // plain text: never markup
        state.textContent = round.state;
        if (["succeeded", "failed", "cancelled"].includes(round.state)) {
          window.location.reload(); // the table and chart are rendered by the server
          return;
        }
      }
    } catch (err) {
      state.textContent = "(connection lost, retrying)";
    }
    setTimeout(poll, 3000);
  }
  setTimeout(poll, 3000);
})();
