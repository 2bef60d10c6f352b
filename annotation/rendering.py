"""Markdown to HTML that is safe to put in a page, for untrusted text (model output, prompts, edits).

Two layers: markdown-it renders with raw HTML *disabled* (a ``<script>`` in a response becomes
visible text), then nh3 (the ammonia sanitizer) keeps only an allow-list of tags and attributes,
so even a renderer bug cannot let an event handler or a ``javascript:`` URL through.
Code blocks are highlighted on the server with Pygments (classes only; colours in the stylesheet).
"""

from __future__ import annotations

from functools import lru_cache

import nh3
from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name, guess_lexer
from pygments.util import ClassNotFound

ALLOWED_TAGS = {
    "p", "br", "hr", "strong", "em", "del", "code", "pre", "span", "div", "blockquote",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td", "a",
}
ALLOWED_ATTRIBUTES = {"span": {"class"}, "div": {"class"}, "code": {"class"}, "a": {"href", "title"}, "ol": {"start"}}
_FORMATTER = HtmlFormatter(nowrap=True, classprefix="hl-")


def _highlight(code: str, language: str, _attrs) -> str:
    try:
        lexer = get_lexer_by_name(language) if language else guess_lexer(code)
    except ClassNotFound:
        return ""  # markdown-it escapes and wraps it plainly
    return highlight(code, lexer, _FORMATTER)


_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False, "highlight": _highlight}).enable(
    ["table", "strikethrough"]
)


@lru_cache(maxsize=4096)
def render_markdown(text: str) -> str:
    html = _MARKDOWN.render(text)
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )


def prompt_marks(metadata: dict | None) -> dict[int, str]:
    """The marks a live dialogue's prompt keeps on its earlier assistant turns: message index →
    "chosen" or "edited" (``Prompt.metadata["assistant_marks"]``); none for other prompts."""
    marks = (metadata or {}).get("assistant_marks") or {}
    return {int(i): mark for i, mark in marks.items() if mark in ("chosen", "edited")}


def comparison_rendering(*, messages: list[dict], responses: list[tuple[int, str]], marks: dict[int, str] | None = None) -> dict:
    """What ``Comparison.rendered`` stores: the conversation and both responses, as text and HTML.

    ``responses`` is ``[(response_id, text), ...]``. The sampler calls this when it creates a
    comparison, so the labeling request only reads the column; the web renders lazily (and
    stores the result) only for rows made before that, or by code that did not render.
    ``marks`` (message index → "chosen" | "edited", from ``prompt_marks``) says which earlier
    assistant turns of a live dialogue a labeler chose, and edited.
    """
    marks = marks or {}
    return {
        "conversation": [
            {"role": m["role"], "content": m["content"], "html": render_markdown(m["content"]), **({"mark": marks[i]} if i in marks else {})}
            for i, m in enumerate(messages)
        ],
        "responses": {str(pk): {"text": text, "html": render_markdown(text)} for pk, text in responses},
    }
