"""Parse HTML the way a browser would see its tags, to check that untrusted text stayed inert."""

from html.parser import HTMLParser


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def live_markup(html: str) -> list[str]:
    """Problems a browser would execute: script/iframe/img/object tags, on* handlers, js: URLs."""
    collector = _Collector()
    collector.feed(html)
    problems = []
    for tag, attrs in collector.tags:
        if tag in {"script", "iframe", "img", "object", "embed", "svg", "style", "form", "input"}:
            problems.append(f"<{tag}>")
        for name, value in attrs.items():
            if name.startswith("on"):
                problems.append(f"{tag}[{name}]")
            if name in {"href", "src"} and (value or "").strip().lower().startswith(("javascript:", "data:")):
                problems.append(f"{tag}[{name}={value}]")
    return problems
