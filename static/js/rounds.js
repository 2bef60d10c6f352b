// Rounds page: while the latest round runs, follow its state, progress and log (polls the round
// API every 3 s; the worker reports at least every few seconds while it trains). Every value from
// the server is set with textContent: logs can quote model output.
(function () {
  "use strict";
  const box = document.getElementById("round-log");
  if (!box || !box.dataset.active) return;
  const text = document.getElementById("round-log-text");
  const state = document.getElementById("round-state");
  const bar = document.getElementById("round-progress-bar");
  const line = document.getElementById("round-progress-text");
  const STEPS = {
    snapshot: "Snapshot of the labels", training_rm: "Reward model", training_dpo: "DPO policy",
    evaluating: "Head-to-head evaluation",
  };

  // "Reward model · training · step 10 of 100 · loss 0.693 · accuracy 0.55 · 1 min 20 s spent · about 12 min left"
  function describe(p) {
    if (!p || !p.step) return null;
    const parts = [STEPS[p.step] || p.step];
    if (p.phase) parts.push(p.phase);
    if (p.total) parts.push((p.unit === "steps" ? "step " : "") + p.done + " of " + p.total + (p.unit === "steps" ? "" : " " + p.unit));
    if (p.loss !== undefined) parts.push("loss " + p.loss);
    if (p.accuracy !== undefined) parts.push("batch accuracy " + p.accuracy);
    if (p.elapsed_s !== undefined && p.elapsed_s !== null) parts.push(Arbiter.duration(p.elapsed_s) + " spent");
    if (p.eta_s !== null && p.eta_s !== undefined) parts.push("about " + Arbiter.duration(p.eta_s) + " left");
    return parts.join(" · ");
  }

  function showProgress(p) {
    if (!line) return;
    const said = describe(p);
    if (said) line.textContent = said;
    if (p && p.total) {
      bar.max = p.total;
      bar.value = p.done;
    } else {
      bar.removeAttribute("value"); // indeterminate while a step loads or snapshots
    }
  }

  async function poll() {
    try {
      const response = await fetch(box.dataset.url, { credentials: "same-origin" });
      if (response.ok) {
        const round = await response.json();
        text.textContent = round.log; // plain text: never markup
        state.textContent = round.state_display;
        const badge = document.getElementById("round-badge-" + round.id);
        if (badge) {
          badge.textContent = round.state_display; // the table's badge and the log never disagree
          badge.className = "badge state-" + round.state;
        }
        showProgress(round.progress);
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
  const initial = document.getElementById("round-progress-data");
  if (initial) showProgress(JSON.parse(initial.textContent));
  setTimeout(poll, 3000);
})();
