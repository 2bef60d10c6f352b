// The labeling page: next → verdict → edit → submit → next, without page reloads, keyboard first.
// Response and prompt HTML arrives sanitized from the server (markdown-it without raw HTML, then
// nh3); every other text is set with textContent, never as markup.
(function () {
  "use strict";

  const root = document.getElementById("labeler");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const nextUrl = root.dataset.nextUrl;
  const queueUrl = root.dataset.queueUrl;
  // While the committee is answering, a comparison can arrive any second: look again sooner.
  const POLL_MS = { sampling: 3000, leased_to_others: 10000 };
  const apiRoot = root.dataset.apiRoot;

  // phase: loading | verdict | skip | edit | submitting | empty (live mode: compose | streaming | ended)
  const state = { phase: "loading", task: null, choice: null, key: null, pollTimer: null, afterLoad: null };
  let live = null; // the live dialogue's hooks, when this page is one

  async function api(url, body) {
    // Retries network failures and 5xx a few times with the same body (and so the same
    // idempotency key): a submit that reached the server once is not recorded twice.
    let lastError;
    for (let attempt = 0; attempt < 4; attempt++) {
      try {
        const response = await fetch(url, {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-CSRFToken": Arbiter.csrfToken() },
          body: JSON.stringify(body || {}),
        });
        if (response.status >= 500) throw new Error("server error " + response.status);
        const data = response.status === 204 ? null : await response.json().catch(() => null);
        // A study participant who is done is sent back to the study's platform (X-Redirect on next).
        return { status: response.status, data, redirect: response.headers.get("X-Redirect") };
      } catch (err) {
        lastError = err;
        await new Promise((r) => setTimeout(r, 400 * 2 ** attempt));
      }
    }
    throw lastError;
  }

  function say(text, kind) {
    const el = $("status");
    el.textContent = text || "";
    el.className = "status" + (kind ? " " + kind : "");
  }

  // "Left for you" is counted by the server when the page opens and when the queue is empty;
  // in between, each submit or skip counts it down here (a hidden gold item counts too: the page
  // may show one less than the server until the next count).
  function countDownLeft() {
    const left = $("left-for-you");
    left.textContent = Math.max(0, Number(left.textContent) - 1);
  }

  function setProgress(progress) {
    if (!progress) return;
    $("done-today").textContent = progress.done_today;
    $("remaining").textContent = progress.remaining;
  }

  // Why the queue is empty (sampling in flight, nothing sampled yet, leased to others, all done),
  // in the server's words; while work may still arrive, look again every POLL_MS.
  async function explainEmpty() {
    clearTimeout(state.pollTimer);
    $("empty-reason").textContent = "Looking for the reason…";
    try {
      const response = await fetch(queueUrl, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error("status " + response.status);
      const data = await response.json();
      if (state.phase !== "empty") return;
      $("empty-reason").textContent = data.message;
      $("left-for-you").textContent = data.left_for_you;
      $("empty-lead").hidden = !data.project_url;
      if (data.project_url) $("empty-lead").href = data.project_url;
      $("empty-poll").hidden = !data.poll;
      if (data.poll) {
        const every = POLL_MS[data.reason] || 10000;
        $("empty-poll").textContent = "This page looks again every " + every / 1000 + " seconds and shows the next comparison when there is one.";
        state.pollTimer = setTimeout(() => { if (state.phase === "empty") loadNext(); }, every);
      }
    } catch (err) {
      $("empty-reason").textContent = "Every open comparison has its labels or is leased to someone else (the reason could not be read: " + err.message + ").";
    }
  }

  function setPhase(phase) {
    const wasEmpty = state.phase === "empty";
    state.phase = phase;
    if (phase === "empty" && !wasEmpty) explainEmpty();
    // Live mode adds: compose (writing a turn), streaming (both answers growing), ended.
    $("task").hidden = ["empty", "loading", "compose", "ended"].includes(phase);
    $("empty").hidden = phase !== "empty";
    $("verdict").hidden = !(phase === "verdict" || phase === "skip");
    $("skip-panel").hidden = phase !== "skip";
    $("edit-panel").hidden = phase !== "edit";
    $("safety-confirm").hidden = phase !== "confirm";
    document.querySelectorAll(".choice, .safety input").forEach((b) => (b.disabled = phase !== "verdict"));
    if (live) live.phase(phase);
  }

  const MARK_TITLES = { chosen: "The answer chosen at this turn", edited: "The chosen answer, as edited at this turn" };

  function turnElement(m, last) {
    const turn = document.createElement("div");
    turn.className = "turn turn-" + m.role + (last ? " turn-last" : "");
    const who = document.createElement("div");
    who.className = "who";
    who.textContent = m.role === "system" ? "System" : m.role === "user" ? "User" : "Assistant";
    if (m.mark) { // a live dialogue's earlier answer: the one its labeler chose, or their edit of it
      const badge = document.createElement("span");
      badge.className = "badge mark-" + m.mark;
      badge.textContent = m.mark;
      badge.title = MARK_TITLES[m.mark] || "";
      who.append(badge);
    }
    const body = document.createElement("div");
    body.className = "md";
    body.innerHTML = m.html; // sanitized on the server
    turn.append(who, body);
    return turn;
  }

  // A multi-turn conversation (an imported dialogue, a live one) folds the turns before the last
  // user turn: the pair answers that turn, and a long history would push both answers off the
  // screen. System messages stay in view: they set the rules the answers are judged by.
  function renderConversation(messages) {
    const box = $("conversation");
    box.replaceChildren();
    const lastUser = messages.map((m) => m.role).lastIndexOf("user");
    const folded = messages.filter((m, i) => i < lastUser && m.role !== "system");
    const earlier = document.createElement("details");
    earlier.className = "earlier-turns";
    const summary = document.createElement("summary");
    const turns = folded.filter((m) => m.role === "user").length || folded.length;
    const label = (verb) => verb + " " + turns + " earlier turn" + (turns === 1 ? "" : "s");
    summary.textContent = label("Show");
    earlier.addEventListener("toggle", () => (summary.textContent = label(earlier.open ? "Hide" : "Show")));
    const inside = document.createElement("div");
    inside.className = "earlier-body";
    earlier.append(summary, inside);
    messages.forEach((m, i) => {
      if (i === lastUser && folded.length) box.append(earlier);
      (i < lastUser && m.role !== "system" ? inside : box).append(turnElement(m, i === messages.length - 1));
    });
  }

  function resetExtras(ask) {
    document.querySelectorAll(".response").forEach((article) => {
      article.querySelector(".extras").hidden = !(ask.attributes || ask.flags || ask.safety);
      article.querySelector(".safety").hidden = !ask.safety;
      article.querySelector(".attributes").hidden = !ask.attributes;
      article.querySelector(".flags").hidden = !ask.flags;
      // Where safety is asked, its mark is the "unsafe" flag too (sent as one): one control, not two.
      article.querySelector('[data-flag="unsafe"]').parentElement.hidden = !!ask.safety;
      article.querySelectorAll("select").forEach((s) => (s.value = ""));
      article.querySelectorAll("input[type=checkbox], input[type=radio]").forEach((c) => (c.checked = false));
      article.classList.remove("chosen", "rejected");
    });
    $("rationale").hidden = !ask.rationale;
    $("rationale").value = "";
    $("both-bad").checked = false;
  }

  function render(task) {
    state.task = task;
    state.choice = null;
    state.key = crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random();
    renderConversation(task.conversation);
    ["left", "right"].forEach((side) => {
      document.querySelector("#response-" + side + " .response-body").innerHTML = task[side].html; // sanitized
    });
    resetExtras(task.ask);
    const hint = $("suggestion");
    if (task.suggestion) {
      const strength = (task.suggestion.strength || "").replace(/_/g, " ");
      hint.textContent = "The judge model leans " + (task.suggestion.side === "left" ? "A (left)" : "B (right)") +
        (strength ? ", " + strength : "") +
        (task.suggestion.confidence !== null ? " (confidence " + task.suggestion.confidence + ")" : "") +
        ". It is often wrong: judge for yourself.";
      hint.hidden = false;
    } else {
      hint.hidden = true;
    }
    setProgress(task.progress);
    setPhase("verdict");
    window.scrollTo(0, 0);
  }

  // After a wait, work has arrived (a sampling batch): count the labeler's own queue again.
  async function recountLeft() {
    try {
      const response = await fetch(queueUrl, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.ok) $("left-for-you").textContent = (await response.json()).left_for_you;
    } catch (err) {
      // a display figure: the next count corrects it
    }
  }

  // A study participant's part is over: on to the study's completion (or screen-out) page.
  function leave(url) {
    setPhase("loading");
    say("Done, thank you. Taking you back to the study…", "ok");
    window.location.assign(url);
  }

  async function loadNext() {
    clearTimeout(state.pollTimer);
    const wasEmpty = state.phase === "empty";
    setPhase("loading");
    say("Loading the next comparison…");
    try {
      const { status, data, redirect } = await api(nextUrl, {});
      const afterLoad = state.afterLoad;
      state.afterLoad = null;
      if (redirect) {
        leave(redirect);
      } else if (status === 200) {
        say(afterLoad || "", afterLoad ? "ok" : undefined);
        render(data);
        if (wasEmpty) recountLeft();
      } else if (status === 204) {
        say(afterLoad || "", afterLoad ? "ok" : undefined);
        setPhase("empty");
      } else {
        say((data && data.detail) || "Could not load the next comparison (" + status + ")", "error");
        setPhase("empty");
      }
    } catch (err) {
      say("Network problem: " + err.message + ". Press r to retry.", "error");
      setPhase("empty");
    }
  }

  // Whether the labeler marked a side safe (true), unsafe (false) or not yet (null).
  function markedSafe(side) {
    const mark = document.querySelector('input[name="safety-' + side + '"]:checked');
    return mark ? mark.value === "safe" : null;
  }

  // Llama 2's safety bin of the chosen pair, said from the chosen response's side.
  function safetyBin() {
    const chosen = markedSafe(state.choice.side);
    const rejected = markedSafe(state.choice.side === "left" ? "right" : "left");
    if (chosen) return rejected ? "both_safe" : "chosen_safe";
    return rejected ? "rejected_safe" : "both_unsafe";
  }

  function choose(button) {
    if (state.phase !== "verdict") return;
    if (state.task.ask.safety && (markedSafe("left") === null || markedSafe("right") === null)) {
      say("First mark each response safe or unsafe: q / w for A, o / p for B.", "error");
      return;
    }
    say("");
    state.choice = { side: button.dataset.side, strength: button.dataset.strength, label: button.textContent.trim() };
    const other = state.choice.side === "left" ? "right" : "left";
    $("response-" + state.choice.side).classList.add("chosen");
    $("response-" + other).classList.remove("chosen");
    $("response-" + other).classList.add("rejected");
    // Llama 2 kept such pairs out of its data: a slipped key should not put one in unasked.
    if (state.task.ask.safety && safetyBin() === "rejected_safe") {
      setPhase("confirm");
      $("safety-no").focus();
      return;
    }
    toEditOrSubmit();
  }

  function toEditOrSubmit() {
    if (!state.task.ask.edit) {
      submit(null);
      return;
    }
    $("edit-choice").textContent = "(" + state.choice.label.replace(/^\d\s*/, "") + ")";
    const editor = $("editor");
    editor.value = state.task[state.choice.side].text;
    editor.maxLength = state.task.ask.max_edit_chars;
    updateDiff();
    setPhase("edit");
    // The edit panel is below both responses: bring it up, or the labeler sees nothing happen.
    $("edit-panel").scrollIntoView({ block: "start", behavior: "smooth" });
  }

  function backToVerdict() {
    document.querySelectorAll(".response").forEach((a) => a.classList.remove("chosen", "rejected"));
    state.choice = null;
    setPhase("verdict");
  }

  function collect(name, attr, read) {
    const out = {};
    ["left", "right"].forEach((side) => {
      const values = {};
      document.querySelectorAll("#response-" + side + " [" + attr + "]").forEach((el) => read(el, values));
      out[side] = values;
    });
    return out;
  }

  function verdictBody(edit) {
    const body = {
      chosen: state.choice.side,
      strength: state.choice.strength,
      both_bad: $("both-bad").checked,
      edit: edit,
      rationale: $("rationale").hidden ? "" : $("rationale").value,
      idempotency_key: state.key,
      next: !live,
    };
    if (state.task.ask.attributes) {
      body.attributes = collect("attributes", "data-attribute", (el, v) => {
        if (el.value !== "") v[el.dataset.attribute] = Number(el.value);
      });
    }
    if (state.task.ask.safety) body.safety = safetyBin();
    if (state.task.ask.flags) {
      const flags = collect("flags", "data-flag", (el, v) => {
        if (el.checked) v[el.dataset.flag] = true;
      });
      if (state.task.ask.safety) ["left", "right"].forEach((side) => { if (markedSafe(side) === false) flags[side].unsafe = true; });
      body.flags = { left: Object.keys(flags.left), right: Object.keys(flags.right) };
    }
    return body;
  }

  async function submit(edit) {
    if (!state.choice || state.phase === "submitting") return;
    const body = verdictBody(edit);
    setPhase("submitting");
    say("Saving…");
    try {
      const { status, data } = await api(apiRoot + "assignments/" + state.task.assignment + "/submit/", body);
      if (status === 200 || status === 201) {
        if (data.created) {
          $("done-today").textContent = Number($("done-today").textContent) + 1;
          countDownLeft();
        }
        if (data.redirect) {
          leave(data.redirect);
          return;
        }
        // A live dialogue goes on from the verdict (static/js/live.js): the next turn is written.
        if (live) {
          live.submitted(data);
        } else if (root.dataset.liveUrl && Math.random() < Number(root.dataset.writtenShare)) {
          // Projects with both sources: this share of the tasks is a live dialogue of one's own.
          window.location.assign(root.dataset.liveUrl);
          return;
        } else if (data.next) {
          render(data.next);
        } else {
          setPhase("empty");
        }
        say(data.edited ? "Saved, with your edit." : "Saved.", "ok");
        return;
      }
      say((data && data.detail) || "The submit was refused (" + status + ")", "error");
      if (data && (data.error === "lease_expired" || data.error === "already_ended" || data.error === "not_found")) {
        if (live) live.refresh();
        else await loadNext();
      } else {
        setPhase("edit");
      }
    } catch (err) {
      say("Network problem, nothing was lost: " + err.message + ". Submit again.", "error");
      setPhase(state.task.ask.edit ? "edit" : "verdict");
    }
  }

  async function skip() {
    const reason = $("skip-reason").value.trim();
    if (!reason) {
      say("Say why you skip.", "error");
      return;
    }
    setPhase("submitting");
    try {
      const { status, data } = await api(apiRoot + "assignments/" + state.task.assignment + "/skip/", { reason });
      if (status !== 200) {
        say((data && data.detail) || "Skip refused (" + status + ")", "error");
      } else {
        state.afterLoad = "Skipped (" + reason + "); it goes back to the pool for others.";
        countDownLeft();
      }
    } catch (err) {
      say("Network problem: " + err.message, "error");
    }
    $("skip-reason").value = "";
    await loadNext();
  }

  // Word-level diff (LCS) between the chosen text and the edit, for the live view.
  function tokens(text) {
    return text.match(/\s+|[^\s]+/g) || [];
  }

  function updateDiff() {
    const original = state.task[state.choice.side].text;
    const edited = $("editor").value;
    const diff = $("diff");
    diff.replaceChildren();
    const a = tokens(original);
    const b = tokens(edited);
    $("edit-count").textContent = edited.length + " / " + state.task.ask.max_edit_chars + " characters";
    if (original.split(/\s+/).join(" ").trim() === edited.split(/\s+/).join(" ").trim()) {
      diff.textContent = "No change (whitespace does not count as an edit).";
      diff.classList.add("muted");
      return;
    }
    diff.classList.remove("muted");
    if (a.length * b.length > 4e6) {
      diff.textContent = "Edited (too long to show a live diff).";
      return;
    }
    const n = a.length, m = b.length;
    const table = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
    for (let i = n - 1; i >= 0; i--)
      for (let j = m - 1; j >= 0; j--)
        table[i][j] = a[i] === b[j] ? table[i + 1][j + 1] + 1 : Math.max(table[i + 1][j], table[i][j + 1]);
    let i = 0, j = 0;
    const add = (tag, text) => {
      const el = document.createElement(tag);
      el.textContent = text;
      diff.append(el);
    };
    while (i < n || j < m) {
      if (i < n && j < m && a[i] === b[j]) { add("span", a[i]); i++; j++; }
      else if (j < m && (i === n || table[i][j + 1] >= table[i + 1][j])) { add("ins", b[j]); j++; }
      else { add("del", a[i]); i++; }
    }
    // Show the change being made, not the top of a long answer (edits at the end were invisible).
    const changes = diff.querySelectorAll("ins, del");
    const latest = changes[changes.length - 1];
    if (latest) diff.scrollTop = Math.max(0, latest.offsetTop - diff.clientHeight / 2); // .diff is positioned: offsets are its own
  }

  // "Both are bad" is a mark on the verdict, not a verdict: say that one is still needed.
  function bothBadHint() {
    if ($("both-bad").checked) say("Marked: both responses are bad. Still pick the less bad one (1-8); the mark goes with it.", "ok");
    else say("The both-bad mark is off.");
  }

  // --- wiring ---------------------------------------------------------------------------------
  $("both-bad").addEventListener("change", bothBadHint);
  document.querySelectorAll(".choice").forEach((b) => b.addEventListener("click", () => choose(b)));
  $("no-edit").addEventListener("click", () => submit(null));
  $("safety-yes").addEventListener("click", () => { if (state.phase === "confirm") toEditOrSubmit(); });
  $("safety-no").addEventListener("click", () => { if (state.phase === "confirm") backToVerdict(); });
  $("submit-edit").addEventListener("click", () => submit($("editor").value));
  $("editor").addEventListener("input", updateDiff);
  $("skip").addEventListener("click", () => { setPhase("skip"); $("skip-reason").focus(); });
  $("retry").addEventListener("click", loadNext);
  $("show-guidelines").addEventListener("click", () => $("guidelines").showModal());

  document.addEventListener("keydown", (event) => {
    const target = event.target;
    // A radio (the safety marks) takes no text: the keys keep working after one is clicked.
    const typing = target instanceof HTMLTextAreaElement || target instanceof HTMLSelectElement
      || (target instanceof HTMLInputElement && target.type !== "radio");
    if ($("guidelines").open) return; // the dialog handles Esc itself
    if (target === $("editor")) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); submit($("editor").value); }
      else if (event.key === "Escape") { event.preventDefault(); $("editor").blur(); }
      return;
    }
    if (target === $("skip-reason")) {
      if (event.key === "Enter") { event.preventDefault(); skip(); }
      else if (event.key === "Escape") { event.preventDefault(); $("skip-reason").value = ""; setPhase("verdict"); }
      return;
    }
    if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key;
    if (key === "?" || key === "g") { event.preventDefault(); $("guidelines").showModal(); return; }
    if (state.phase === "empty" && key === "r") { event.preventDefault(); loadNext(); return; }
    if (state.phase === "verdict") {
      const button = document.querySelector('.choice[data-key="' + key + '"]');
      if (button) { event.preventDefault(); choose(button); return; }
      if (key === "0") { event.preventDefault(); $("both-bad").checked = !$("both-bad").checked; bothBadHint(); return; }
      if (key === "s") { event.preventDefault(); setPhase("skip"); $("skip-reason").focus(); return; }
      const mark = state.task.ask.safety && document.querySelector('.safety input[data-key="' + CSS.escape(key) + '"]');
      if (mark) { event.preventDefault(); mark.checked = true; return; }
    }
    if (state.phase === "confirm") {
      if (key === "y") { event.preventDefault(); toEditOrSubmit(); return; }
      if (key === "n" || key === "Escape") { event.preventDefault(); backToVerdict(); return; }
    }
    if (state.phase === "edit") {
      if (key === "n") { event.preventDefault(); submit(null); return; }
      if (key === "e") { event.preventDefault(); $("editor").focus(); return; }
      if (key === "Backspace") { event.preventDefault(); backToVerdict(); return; }
    }
  });

  // Live mode (the page of a live dialogue): static/js/live.js writes turns and streams the two
  // answers, then hands the comparison to render(); the verdict and edit are this file's.
  window.ArbiterLabeler = {
    render, setPhase, say, api, state,
    attachLive(hooks) { live = hooks; },
  };
  if (!root.dataset.live) loadNext();
})();
