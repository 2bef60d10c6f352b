"""An LLM judge's pairwise verdict, MT-Bench style (Zheng et al. 2023, "Judging LLM-as-a-judge"),
on Arbiter's four-level scale. Plain Python: no Django, no model code.

- ``judge_messages``: the chat messages that ask the judge which of two answers to a conversation
  is better: MT-Bench's pairwise prompt, its final verdict ``[[A]]`` / ``[[B]]`` / ``[[C]]``
  followed, for a winner, by how much better (the labelers' strengths).
- ``parse_verdict``: the judge's answer read back. Model output is outside text: any string (or
  none) gives a ``Verdict``, never an exception, and the work is bounded whatever its length.
- ``combine``: the verdicts of the two orders (A shown first, then B shown first) as one
  ``Suggestion``: consistent, inconsistent (the answer changed with the order: position bias,
  or a pair too close to call) or failed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The strengths as Arbiter stores them (annotation.models.Strength; no Django here), strongest first.
SIGNIFICANTLY_BETTER = "significantly_better"
BETTER = "better"
SLIGHTLY_BETTER = "slightly_better"
NEGLIGIBLY_BETTER = "negligibly_better"
STRENGTHS = (SIGNIFICANTLY_BETTER, BETTER, SLIGHTLY_BETTER, NEGLIGIBLY_BETTER)

#: How likely a verdict of each strength is to name the answer people prefer: a documented prior,
#: not a fit (the quality page's judge-human agreement is the check). A suggestion's confidence is
#: the mean over its two orders (``combine``), so a pair called "significantly better" both ways
#: has 0.95 and one called "better" one way and "slightly better" the other has 0.775.
STRENGTH_PROBABILITY = {SIGNIFICANTLY_BETTER: 0.95, BETTER: 0.85, SLIGHTLY_BETTER: 0.70, NEGLIGIBLY_BETTER: 0.55}

#: What is shown to the judge of each answer and of the conversation before them: enough for any
#: answer a labeler reads, bounded so a runaway answer cannot overflow the judge's context.
MAX_ANSWER_CHARS = 6_000
MAX_CONVERSATION_CHARS = 8_000
#: Only the end of a judge's answer is read: its verdict comes last, and a hostile answer of
#: megabytes costs no more than this.
MAX_PARSE_CHARS = 20_000

SYSTEM_PROMPT = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants "
    "to the user question displayed below. You should choose the assistant that follows the user's instructions "
    "and answers the user's question better. Your evaluation should consider factors such as the helpfulness, "
    "relevance, accuracy, depth, creativity, and level of detail of their responses. Begin your evaluation by "
    "comparing the two responses and provide a short explanation (at most three sentences). Avoid any position "
    "biases and ensure that the order in which the responses were presented does not influence your decision. "
    "Do not allow the length of the responses to influence your evaluation. Do not favor certain names of the "
    "assistants. Be as objective as possible. After providing your explanation, output your final verdict on "
    "its own last line by strictly following this format: \"[[A]]\" if assistant A is better, \"[[B]]\" if "
    "assistant B is better, each followed by how much better: \"significantly better\", \"better\" or "
    "\"slightly better\"; and \"[[C]]\" for a tie, when they are about equal or you are unsure. "
    "For example: \"[[A]] slightly better\", \"[[B]] significantly better\" or \"[[C]]\"."
)

_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}


@dataclass(frozen=True)
class Verdict:
    """One order's verdict. ``choice``: the answer shown "first" or "second", "tie", or None when
    the judge gave no usable verdict (``error`` says why). ``strength``: one of ``STRENGTHS`` for a
    choice ("negligibly_better" for a tie), "" for none."""

    choice: str | None
    strength: str = ""
    error: str = ""


@dataclass(frozen=True)
class Suggestion:
    """Both orders' verdicts as one. ``state``: "consistent" (the same answer both ways: A, B or
    a tie), "inconsistent" (the answer changed with the order) or "failed" (an order without a
    usable verdict). ``winner``: "a", "b", or None (a tie, or not consistent)."""

    state: str
    winner: str | None = None
    strength: str = ""
    confidence: float | None = None


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "\n[... the rest is cut]"


def _content(message) -> str:
    content = message.get("content", "") if isinstance(message, dict) else message
    return content if isinstance(content, str) else str(content)


def _conversation_text(conversation: list[dict]) -> str:
    if len(conversation) == 1 and isinstance(conversation[0], dict) and conversation[0].get("role") == "user":
        return f"[User Question]\n{_cut(_content(conversation[0]), MAX_CONVERSATION_CHARS)}"
    turns = "\n\n".join(
        f"### {_ROLES.get(m.get('role') if isinstance(m, dict) else None, 'User')}:\n{_content(m)}" for m in conversation
    )
    if len(turns) > MAX_CONVERSATION_CHARS:  # the latest turns matter most: keep the end
        turns = "[... earlier turns are cut]\n" + turns[-MAX_CONVERSATION_CHARS:]
    return (
        "[The Start of the Conversation; the assistants answer its last turn]\n"
        f"{turns}\n[The End of the Conversation]"
    )


def judge_messages(conversation: list[dict], first: str, second: str) -> list[dict]:
    """Chat messages asking which of ``first`` (shown as assistant A) and ``second`` (shown as
    assistant B) better answers ``conversation`` (chat messages up to the turn to answer)."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": (
            f"{_conversation_text(conversation)}\n\n"
            f"[The Start of Assistant A's Answer]\n{_cut(first, MAX_ANSWER_CHARS)}\n[The End of Assistant A's Answer]\n\n"
            f"[The Start of Assistant B's Answer]\n{_cut(second, MAX_ANSWER_CHARS)}\n[The End of Assistant B's Answer]"
        )},
    ]


# A verdict tag: "[[A]]", also "[[ b ]]", "[[Assistant A]]", "[[tie]]", and a strength inside it
# ("[[A, slightly better]]"). Bounded repetitions only: linear on any input.
_TAG = re.compile(r"\[\[\s{0,3}(?:assistant\s{0,3})?(a|b|c|tie)\b([^\[\]\n]{0,60})\]\]", re.IGNORECASE)
_STRENGTH = re.compile(
    r"\b(?:(significantly|much|far|clearly|slightly|somewhat|a\s+little|marginally|negligibly)\s+)?better\b"
    r"|\b(negligibl[ey]|unsure|about\s+(?:equal|the\s+same))\b",
    re.IGNORECASE,
)
_STRONG = {"significantly", "much", "far", "clearly"}
_SLIGHT = {"slightly", "somewhat", "a little", "marginally"}
#: Where a strength is looked for around the last tag, on its own line.
_STRENGTH_WINDOW = 120


def _strength_in(text: str) -> str | None:
    found = _STRENGTH.search(text)
    if found is None:
        return None
    if found.group(2):
        return NEGLIGIBLY_BETTER
    modifier = " ".join((found.group(1) or "").lower().split())
    if modifier in _STRONG:
        return SIGNIFICANTLY_BETTER
    if modifier in _SLIGHT:
        return SLIGHTLY_BETTER
    return NEGLIGIBLY_BETTER if modifier == "negligibly" else BETTER


def parse_verdict(text) -> Verdict:
    """The judge's verdict in ``text``: its LAST well-formed tag wins (a judge may quote the
    format, or change its mind, before its final line). A winner's strength is read inside the
    tag, else after it on the same line, else before it on that line; a bare ``[[A]]`` is
    MT-Bench's plain verdict, read as "better". ``[[C]]`` is a tie ("negligibly_better").
    Never raises."""
    if not isinstance(text, str):
        return Verdict(None, error="the judge's answer is not text")
    if not text.strip():
        return Verdict(None, error="the judge's answer is empty")
    tail = text[-MAX_PARSE_CHARS:]
    last = None
    for last in _TAG.finditer(tail):
        pass
    if last is None:
        return Verdict(None, error="no verdict: the answer names none of [[A]], [[B]], [[C]]")
    letter = last.group(1).lower()
    if letter in ("c", "tie"):
        return Verdict("tie", NEGLIGIBLY_BETTER)
    line_start = tail.rfind("\n", 0, last.start()) + 1
    line_end = tail.find("\n", last.end())
    after = tail[last.end() : line_end if line_end != -1 else len(tail)][:_STRENGTH_WINDOW]
    before = tail[max(line_start, last.start() - _STRENGTH_WINDOW) : last.start()]
    strength = _strength_in(last.group(2)) or _strength_in(after) or _strength_in(before) or BETTER
    return Verdict("first" if letter == "a" else "second", strength)


def verdict_answer(verdict: Verdict, order: str) -> str | None:
    """A verdict as an answer about the pair: "a", "b", "tie", or None (no usable verdict).
    ``order``: "ab" (response A was shown first) or "ba" (response B was). A winner only
    "negligibly better" is a tie, as a labeler's is (annotation.quality.label_score)."""
    if verdict.choice is None:
        return None
    if verdict.choice == "tie" or verdict.strength == NEGLIGIBLY_BETTER:
        return "tie"
    shown_first_is_a = order == "ab"
    return "a" if (verdict.choice == "first") == shown_first_is_a else "b"


def swap_state(ab_answer: str | None, ba_answer: str | None) -> str:
    """"failed" when an order has no answer, "consistent" when both give the same answer (a
    tie counts as an answer), "inconsistent" otherwise (MT-Bench's position-swap check)."""
    if ab_answer is None or ba_answer is None:
        return "failed"
    return "consistent" if ab_answer == ba_answer else "inconsistent"


def combine(ab: Verdict, ba: Verdict) -> Suggestion:
    """The verdicts of both orders as one suggestion. ``ab``: response A was shown first; ``ba``:
    response B was (so its "first" is B). A consistent winner's strength is the weaker of the two
    and its confidence the mean of ``STRENGTH_PROBABILITY`` over both; a consistent tie has no
    winner and no confidence; inconsistent and failed pairs have neither."""
    answers = verdict_answer(ab, "ab"), verdict_answer(ba, "ba")
    state = swap_state(*answers)
    if state != "consistent":
        return Suggestion(state)
    if answers[0] == "tie":
        return Suggestion(state, None, NEGLIGIBLY_BETTER, None)
    # A verdict made by hand (or read from an old row) may lack a strength: a bare winner is "better".
    strengths = [v.strength if v.strength in STRENGTHS else BETTER for v in (ab, ba)]
    weaker = max(strengths, key=STRENGTHS.index)
    confidence = sum(STRENGTH_PROBABILITY[s] for s in strengths) / 2
    return Suggestion(state, answers[0], weaker, round(confidence, 4))
