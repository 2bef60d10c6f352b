// Live dialogues (the labeling page in live mode): the labeler writes a turn, two committee
// members answer side by side as they are generated (the page polls the turn's row; see
// modeling/services/live.py for why polling), then label.js takes the verdict and the edit, and
// the dialogue goes on from the edited (or chosen) answer. Every text here is the labeler's own
// or a model's answer, set with textContent; the comparison to judge arrives sanitized.
(function () {
  "use strict";

  const root = document.getElementById("labeler");
  const L = window.ArbiterLabeler;
  if (!root || !root.dataset.live || !L) return;
  const $ = (id) => document.getElementById(id);
  const apiRoot = root.dataset.apiRoot;
  const dialogueUrl = root.dataset.dialogueUrl;
  const maxTurns = Number(root.dataset.maxTurns);

  // dialogue: id or null; turnsJudged: judged turns of it; context: the conversation so far as
  // [{role, content, mark}]; turn: the live turn being answered (its id) and its poll timer.
  // shown: the turn whose conversation is on the page.
  const live = { dialogue: null, turnsJudged: 0, context: [], turn: null, timer: null, shown: null };

  // The dialogue so far as plain text into ``box`` (the transcript while composing, the
  // conversation above the pair while it streams), a chosen or edited answer marked.
  function showMessages(box, tag) {
    box.replaceChildren();
    live.context.forEach((m) => {
      const item = document.createElement(tag);
      item.className = "turn turn-" + m.role;
      const who = document.createElement("span");
      who.className = "who";
      who.textContent = m.role === "system" ? "System" : m.role === "user" ? "You" : "Assistant";
      item.append(who);
      if (m.mark) {
        const badge = document.createElement("span");
        badge.className = "badge mark-" + m.mark;
        badge.textContent = m.mark;
        item.append(badge);
      }
      const body = document.createElement("div");
      body.className = "plain";
      body.textContent = m.content;
      item.append(body);
      box.append(item);
    });
  }

  function showTranscript() {
    showMessages($("transcript"), "li");
    $("transcript").hidden = live.context.length === 0;
  }

  function setTurnLabel(index) {
    $("live-turn").textContent = "Turn " + (index + 1) + " of " + maxTurns;
  }

  // label.js calls this on every phase change: the live controls follow.
  function phase(name) {
    $("composer").hidden = name !== "compose";
    $("live-ended").hidden = name !== "ended";
    $("live-end").hidden = !live.dialogue || name === "ended";
    $("skip").hidden = true; // a live turn is redrawn or the dialogue ended, not skipped
    if (name !== "streaming") {
      $("live-redraw").hidden = true;
      document.querySelectorAll(".response").forEach((a) => a.classList.remove("streaming", "side-failed"));
    }
    $("transcript").hidden = live.context.length === 0 || !(name === "compose" || name === "ended");
  }

  function compose() {
    clearTimeout(live.timer);
    const first = !live.dialogue;
    setTurnLabel(live.turnsJudged);
    $("live-text-label").textContent = first ? "Write a prompt for the committee" : "Continue the dialogue: your next message";
    if ($("live-system")) $("live-system").disabled = !first;
    if ($("live-category")) $("live-category").disabled = !first;
    showTranscript();
    L.setPhase("compose");
    $("live-text").focus();
  }

  function ended(text) {
    clearTimeout(live.timer);
    showTranscript();
    L.setPhase("ended");
    if (text) L.say(text, "ok");
  }

  async function get(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    const data = response.status === 204 ? null : await response.json().catch(() => null);
    return { status: response.status, data };
  }

  async function send(event) {
    if (event) event.preventDefault();
    const text = $("live-text").value;
    if (!text.trim()) { L.say("Write something first.", "error"); return; }
    $("live-send").disabled = true;
    L.say("Sending…");
    try {
      let result;
      if (!live.dialogue) {
        const body = { text };
        if ($("live-system") && $("live-system").value.trim()) body.system_prompt = $("live-system").value;
        if ($("live-category") && $("live-category").value) body.category = $("live-category").value;
        result = await L.api(dialogueUrl, body);
      } else {
        result = await L.api(apiRoot + "dialogues/" + live.dialogue + "/turns/", { text });
      }
      if (result.status !== 201) {
        L.say((result.data && result.data.detail) || "Not sent (" + result.status + ")", "error");
        return;
      }
      $("live-text").value = "";
      if (live.context.length === 0 && result.data && $("live-system") && $("live-system").value.trim()) {
        live.context.push({ role: "system", content: $("live-system").value.trim() });
      }
      live.context.push({ role: "user", content: text.trim() });
      showTurn(result.data);
    } catch (err) {
      L.say("Network problem, nothing was sent: " + err.message, "error");
    } finally {
      $("live-send").disabled = false;
    }
  }

  // Both answers as they grow, by screen side; label.js renders the comparison once they are in.
  function showTurn(view) {
    live.dialogue = view.dialogue;
    live.turn = view.turn;
    setTurnLabel(view.turn_index);
    if (view.task) {
      clearTimeout(live.timer);
      L.say("Both answers are in: judge them (1-8).", "ok");
      L.render(view.task);
      return;
    }
    if (view.status === "cancelled") { refresh(); return; }
    $("live-end").hidden = false;
    if (L.state.phase !== "streaming" || live.shown !== view.turn) {
      L.setPhase("streaming");
      live.shown = view.turn;
      showMessages($("conversation"), "div");
    }
    ["left", "right"].forEach((side) => {
      const article = $("response-" + side);
      const body = article.querySelector(".response-body");
      const s = view[side];
      article.classList.toggle("streaming", s.state === "generating" && view.status === "generating");
      article.classList.toggle("side-failed", s.failed);
      body.textContent = s.failed ? (s.text ? s.text + "\n\n" : "") + "⚠ " + s.error : s.text || (view.status === "generating" ? "…" : "");
    });
    const broken = view.status === "failed" || view.status === "stalled";
    $("live-redraw").hidden = !broken;
    $("live-worker").textContent = view.worker_up ? "" : "Live worker: not running";
    if (view.status === "waiting") L.say(view.message, view.worker_up ? undefined : "error");
    else if (broken) L.say(view.message, "error");
    else if (view.status === "generating") L.say("The committee is answering…");
    if (view.status !== "failed") {
      clearTimeout(live.timer);
      // A turn waiting for a worker that is up starts any moment: poll at the streaming pace (a
      // second here was most of the first-token time); slower only while nobody would answer.
      const slow = (view.status === "waiting" && !view.worker_up) || view.status === "stalled";
      live.timer = setTimeout(poll, slow ? 1000 : view.poll_ms);
    }
  }

  async function poll() {
    if (!live.turn) return;
    try {
      const { status, data } = await get(apiRoot + "live-turns/" + live.turn + "/");
      if (status === 200) { showTurn(data); return; }
      L.say((data && data.detail) || "The turn could not be read (" + status + ")", "error");
    } catch (err) {
      L.say("Network problem: " + err.message + "; trying again.", "error");
    }
    live.timer = setTimeout(poll, 2000);
  }

  async function redraw() {
    if (!live.turn || $("live-redraw").hidden) return;
    $("live-redraw").hidden = true;
    try {
      const { status, data } = await L.api(apiRoot + "live-turns/" + live.turn + "/redraw/", {});
      if (status === 201) {
        showTurn(data);
        L.say("A new pair of models is answering.");
      } else {
        L.say((data && data.detail) || "Redraw refused (" + status + ")", "error");
        refresh();
      }
    } catch (err) {
      L.say("Network problem: " + err.message, "error");
      $("live-redraw").hidden = false;
    }
  }

  async function end() {
    if (!live.dialogue) return;
    try {
      const { status, data } = await L.api(apiRoot + "dialogues/" + live.dialogue + "/end/", {});
      if (status !== 200) { L.say((data && data.detail) || "Could not end (" + status + ")", "error"); return; }
      ended("Dialogue ended: " + data.turns_judged + " turn" + (data.turns_judged === 1 ? "" : "s") + " judged.");
    } catch (err) {
      L.say("Network problem: " + err.message, "error");
    }
  }

  // After the verdict (label.js): the answer the dialogue goes on with is the edit, else the chosen one.
  function submitted(data) {
    const state = L.state;
    const edit = data.edited ? $("editor").value : null;
    live.context.push({ role: "assistant", content: (edit !== null ? edit : state.task[state.choice.side].text).trim(), mark: edit !== null ? "edited" : "chosen" });
    live.turnsJudged += 1;
    live.turn = null;
    if (live.turnsJudged >= maxTurns) {
      end();
      return;
    }
    compose();
  }

  // Where the labeler's open dialogue stands (the page opened, or a lease ended under it).
  async function refresh() {
    clearTimeout(live.timer);
    L.setPhase("loading");
    try {
      const { status, data } = await get(dialogueUrl);
      if (status === 204) {
        Object.assign(live, { dialogue: null, turnsJudged: 0, context: [], turn: null });
        compose();
        return;
      }
      if (status !== 200) { L.say((data && data.detail) || "Could not read your dialogue (" + status + ")", "error"); return; }
      live.dialogue = data.dialogue;
      live.turnsJudged = data.turns_judged;
      live.context = data.context || [];
      const current = data.current;
      if (current && !(current.status === "answered" && !current.task) && current.status !== "cancelled") {
        live.context = current.conversation; // the turn's conversation, ending with the labeler's message
        showTurn(current);
      } else if (data.turns_judged >= maxTurns) {
        end();
      } else {
        compose();
      }
    } catch (err) {
      L.say("Network problem: " + err.message + ". Reload the page.", "error");
    }
  }

  function startNew() {
    Object.assign(live, { dialogue: null, turnsJudged: 0, context: [], turn: null });
    compose();
  }

  L.attachLive({ phase, submitted, refresh });
  $("composer").addEventListener("submit", send);
  $("live-text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) send(event);
  });
  $("live-redraw").addEventListener("click", redraw);
  $("live-end").addEventListener("click", end);
  $("live-new").addEventListener("click", startNew);
  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (target instanceof HTMLTextAreaElement || target instanceof HTMLInputElement || target instanceof HTMLSelectElement) return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (L.state.phase === "streaming" && event.key === "r") { event.preventDefault(); redraw(); }
    if (L.state.phase === "ended" && event.key === "n") { event.preventDefault(); startNew(); }
  });
  refresh();
})();
