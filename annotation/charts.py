"""Inline SVG charts drawn from numbers on the server: no CDN, no chart library, works offline.
Views pass these dicts to templates; every label is escaped by the template engine."""

from __future__ import annotations

W, H, PAD = 600, 200, 30


def bars(values: dict[str, float], *, width: int = W, height: int = H) -> dict:
    """A bar per key, scaled to the largest value."""
    items = list(values.items())
    top = max((v for _, v in items), default=0) or 1
    slot = (width - 2 * PAD) / max(1, len(items))
    out = []
    for i, (label, value) in enumerate(items):
        h = (height - 2 * PAD) * value / top
        out.append({"x": round(PAD + i * slot + slot * 0.1, 1), "y": round(height - PAD - h, 1), "w": round(slot * 0.8, 1),
                    "h": round(h, 1), "label": label, "value": value, "tx": round(PAD + i * slot + slot / 2, 1)})
    return {"bars": out, "width": width, "height": height, "base": height - PAD, "top": top}


def intervals(rows: list[dict], *, width: int = W) -> dict:
    """Leaderboard: a dot per rating with its 95% interval as a whisker, one row per member."""
    if not rows:
        return {"rows": [], "width": width, "height": 40}
    lo = min(r["ci95"][0] for r in rows) - 20
    hi = max(r["ci95"][1] for r in rows) + 20
    scale = (width - 200) / (hi - lo or 1)
    height = 30 * len(rows) + 30
    out = [
        {"y": 25 + 30 * i, "name": r["name"], "rating": r["rating"], "x": round(180 + (r["rating"] - lo) * scale, 1),
         "x0": round(180 + (r["ci95"][0] - lo) * scale, 1), "x1": round(180 + (r["ci95"][1] - lo) * scale, 1)}
        for i, r in enumerate(rows)
    ]
    return {"rows": out, "width": width, "height": height}
