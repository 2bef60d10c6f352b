"""The scripted labelers of ``make e2e``: each picks the side that reads as finished and fuller,
with a strength from a fixed cycle (so every strength and both DPO strengths occur), the third
one disagrees now and then, and every ``edit_every``-th winner is edited. Over HTTP only."""

from __future__ import annotations

import re
import time
import uuid

from scripts.stack import Client, StackError

STRENGTHS = ("significantly_better", "better", "slightly_better", "better", "significantly_better", "negligibly_better")


def _finished(text: str) -> bool:
    return bool(re.search(r"[.!?)\]`\"']\s*$", text.strip()))


def _edit(text: str, labeler: str) -> str:
    """A labeler's fix of the winner: cut a trailing half sentence, close with a summary line."""
    body = text.strip()
    cut = max(body.rfind(". "), body.rfind(".\n"), body.rfind("! "), body.rfind("? "))
    if not _finished(body) and cut > len(body) // 3:
        body = body[: cut + 1]
    return f"{body}\n\nIn short: the points above answer the question directly. (edited by {labeler})"


def label_all(client: Client, slug: str, labeler: str, index: int, *, edit_every: int, deadline: float) -> dict:
    """Ask for the next comparison until there is none; submit a verdict (and maybe an edit) for each."""
    done = edits = 0
    while time.monotonic() < deadline:
        status, _, payload = client.request("POST", f"/api/v1/projects/{slug}/next/", {}, expect=(200, 204, 429))
        if status == 204:
            return {"judgments": done, "edits": edits}
        if status == 429:  # lease cap: should not happen with one lease at a time
            time.sleep(0.5)
            continue
        left, right = payload["left"]["text"], payload["right"]["text"]
        score = lambda t: (_finished(t), len(t.split()))  # noqa: E731
        chosen = "left" if score(left) >= score(right) else "right"
        if index == 2 and done % 3 == 2:  # the third labeler sees it differently now and then
            chosen = "right" if chosen == "left" else "left"
        edit = None
        if edit_every and done % edit_every == index % edit_every:
            edit = _edit(left if chosen == "left" else right, labeler)
        verdict = {
            "chosen": chosen, "strength": STRENGTHS[(done + index) % len(STRENGTHS)], "edit": edit,
            "flags": {}, "idempotency_key": uuid.uuid4().hex,
        }
        result = client.post(f"/api/v1/assignments/{payload['assignment']}/submit/", verdict, expect=(201,))
        done += 1
        edits += int(result["edited"])
    raise StackError(f"{labeler} did not run out of comparisons in time")
