// Committee tables (the staff page and a project's overview): a test sent to a member is answered
// by a worker; follow it (the member API, or the project's committee list, every 2 s) until it
// answers or fails. The answer is model output: set as text, never markup.
(function () {
  "use strict";

  function render(box, test) {
    box.replaceChildren();
    const note = document.createElement("div");
    note.className = "small-text muted";
    if (test.state === "succeeded") {
      note.textContent = test.completion_tokens + " tokens in " + test.answer_s + " s" +
        (test.tokens_per_s ? " (" + test.tokens_per_s + " tokens/s)" : "") +
        (test.engine ? " by " + test.engine : "") + ", loaded in " + test.load_s + " s";
      const answer = document.createElement("blockquote");
      answer.className = "test-answer";
      answer.textContent = test.answer;
      box.append(note);
      if (test.engine_note) {
        const fallback = document.createElement("div");
        fallback.className = "small-text warning-text";
        fallback.textContent = test.engine_note;
        box.append(fallback);
      }
      box.append(answer);
    } else if (test.state === "failed") {
      note.className = "error small-text";
      note.textContent = test.error;
      box.append(note);
    } else {
      note.textContent = (test.state === "running" ? "Running" : "Queued") + " on the " + test.queue + " worker…";
      box.append(note);
    }
  }

  function follow(box) {
    async function poll() {
      try {
        const response = await fetch(box.dataset.url, { credentials: "same-origin" });
        if (response.ok) {
          const data = await response.json();
          const member = Array.isArray(data) ? data.find((m) => String(m.id) === box.dataset.member) : data;
          const test = (member && member.last_test) || {};
          render(box, test);
          if (test.state === "succeeded" || test.state === "failed") return;
        }
      } catch (err) {
        // the next poll tries again
      }
      window.setTimeout(poll, 2000);
    }
    window.setTimeout(poll, 1000);
  }

  document.querySelectorAll(".test-result[data-pending='1']").forEach(follow);
})();
