// Project overview: start committee sampling and follow its progress (polls the sampling API).
// Every value from the server is set with textContent: error texts can quote model output.
(function () {
  "use strict";
  const box = document.getElementById("sampling");
  if (!box) return;
  const url = box.dataset.url;
  const body = document.getElementById("sampling-runs");
  const status = document.getElementById("sampling-status");
  let timer = null;

  // "2 min 5 s, about 6 min left" while running; the time it took once finished.
  function timing(r) {
    if (r.elapsed_s === null) return "–";
    return Arbiter.duration(r.elapsed_s) + (r.eta_s !== null ? ", about " + Arbiter.duration(r.eta_s) + " left" : "");
  }

  function render(runs) {
    body.replaceChildren();
    if (!runs.length) {
      const tr = document.createElement("tr");
      const td = Arbiter.cell("No sampling run yet.");
      td.colSpan = 10;
      td.className = "muted";
      tr.append(td);
      body.append(tr);
    }
    runs.forEach((r) => {
      const tr = document.createElement("tr");
      const errors = Object.entries(r.member_errors).map(([m, e]) => m + ": " + e);
      if (r.error) errors.unshift(r.error);
      const state = Arbiter.cell(r.state);
      state.className = "state-" + r.state;
      tr.append(
        Arbiter.cell(r.id), Arbiter.cell((r.mode === "committee" ? "committee" : "best of K") + (r.selection ? " · " + r.selection : "")), state,
        Arbiter.cell(r.prompts_done + " / " + r.prompts_total), Arbiter.cell(r.responses_created), Arbiter.cell(r.pairs_created),
        Arbiter.cell(r.pairs_near_duplicate + " / " + r.responses_empty), Arbiter.cell(r.responses_failed),
        Arbiter.cell(timing(r)), Arbiter.cell(errors.join("; ")),
      );
      body.append(tr);
    });
    const active = runs.some((r) => r.state === "queued" || r.state === "running");
    clearTimeout(timer);
    if (active) timer = setTimeout(refresh, 2000);
  }

  async function refresh() {
    try {
      const response = await fetch(url, { credentials: "same-origin" });
      if (response.ok) render(await response.json());
    } catch (err) {
      status.textContent = "Could not load progress: " + err.message;
    }
  }

  document.getElementById("sampling-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const payload = { mode: form.get("mode") };
    if (form.get("limit")) payload.limit = Number(form.get("limit"));
    if (form.get("max_new_tokens")) payload.max_new_tokens = Number(form.get("max_new_tokens"));
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": Arbiter.csrfToken() },
      body: JSON.stringify(payload),
    });
    const data = await response.json().catch(() => ({}));
    status.textContent = response.status === 202 ? "Sampling queued." : data.detail || JSON.stringify(data);
    status.className = "status " + (response.status === 202 ? "ok" : "error");
    refresh();
  });

  refresh();
})();

// Exports: start one, list them, download finished files (polls while one runs).
(function () {
  "use strict";
  const box = document.getElementById("exports");
  if (!box) return;
  const url = box.dataset.url;
  const list = document.getElementById("export-list");
  const status = document.getElementById("export-status");
  let timer = null;

  function render(exports) {
    list.replaceChildren();
    exports.forEach((e) => {
      const tr = document.createElement("tr");
      const link = Arbiter.cell("");
      if (e.state === "succeeded") {
        const a = document.createElement("a");
        a.href = box.dataset.download + e.id + "/download/";
        a.textContent = "download " + e.file_format;
        link.append(a);
      } else if (e.error) {
        link.textContent = e.error;
        link.className = "error";
      }
      // While it writes: "running · 120,000 of 400,000 judgments · 12 s spent · about 30 s left".
      const p = e.progress || {};
      let state = e.state;
      if (e.state === "running" && p.total) {
        state += " · " + p.done.toLocaleString() + " of " + p.total.toLocaleString() + " judgments · " + Arbiter.duration(p.elapsed_s) + " spent"
          + (p.eta_s !== null && p.eta_s !== undefined ? " · about " + Arbiter.duration(p.eta_s) + " left" : "");
      }
      tr.append(Arbiter.cell(e.number || e.id), Arbiter.cell(e.format), Arbiter.cell(state), Arbiter.cell(e.state === "running" ? (p.rows || 0) : e.row_count), Arbiter.cell(e.sha256 ? e.sha256.slice(0, 12) + "…" : ""),
        Arbiter.cell(new Date(e.created_at).toLocaleString()), link);
      list.append(tr);
    });
    if (!exports.length) list.append(Object.assign(document.createElement("tr"), { innerHTML: '<td colspan="7" class="muted">No export yet.</td>' }));
    clearTimeout(timer);
    if (exports.some((e) => e.state === "queued" || e.state === "running")) timer = setTimeout(refresh, 2000);
  }

  async function refresh() {
    const response = await fetch(url, { credentials: "same-origin" });
    if (response.ok) render(await response.json());
  }

  document.getElementById("export-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const filters = { aggregation: form.get("aggregation") };
    if (form.get("exclude_negligible")) filters.negligible = "exclude";
    if (form.get("include_evaluation")) filters.include_evaluation = true;
    if (form.get("exclude_low_quality")) filters.min_labeler_gold_accuracy = Number(box.dataset.threshold);
    // Every bin but "rejected_safe" (the chosen response unsafe, the rejected one safe), and judgments without one.
    if (form.get("exclude_chosen_unsafe")) filters.safety = ["both_safe", "chosen_safe", "both_unsafe", "unknown"];
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": Arbiter.csrfToken() },
      body: JSON.stringify({ format: form.get("format"), filters, file_format: form.get("file_format") }),
    });
    const data = await response.json().catch(() => ({}));
    status.textContent = response.status === 202 ? "Export queued." : data.detail || JSON.stringify(data);
    status.className = "status " + (response.status === 202 ? "ok" : "error");
    refresh();
  });

  refresh();
})();
