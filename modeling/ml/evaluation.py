"""How good a round's models are: a reward model's held-out pairwise accuracy and a head-to-head
of two policies judged by a reward model, each with a 95% Wilson interval. Plain Python."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import replace

from modeling.ml.training import Progress, report


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion (ties may count as halves)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def evaluate_reward_model(*, model_dir: str, rows: list[dict], max_length: int = 1024) -> dict:
    """Held-out pairwise accuracy, overall and per strength: r(chosen) > r(rejected)."""
    from modeling.ml.reward import RewardScorer

    if not rows:
        return {"pairs": 0, "accuracy": None, "per_strength": {}}
    scorer = RewardScorer(model_dir)
    chosen = scorer.score([r["prompt"] for r in rows], [r["chosen"][0]["content"] for r in rows], max_length)
    rejected = scorer.score([r["prompt"] for r in rows], [r["rejected"][0]["content"] for r in rows], max_length)
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    correct = 0
    for row, c, r in zip(rows, chosen, rejected):
        hit = int(c > r)
        correct += hit
        strength = row.get("strength") or "unknown"  # null: the source gave none (imported pairs)
        per[strength][0] += hit
        per[strength][1] += 1
    low, high = wilson_interval(correct, len(rows))
    return {
        "pairs": len(rows),
        "accuracy": round(correct / len(rows), 4),
        "ci95": [round(low, 4), round(high, 4)],
        "per_strength": {k: {"pairs": n, "accuracy": round(h / n, 4)} for k, (h, n) in sorted(per.items())},
    }


def head_to_head(*, new_policy_dir: str, old_policy_dir: str, reward_dir: str, prompts: list[list[dict]],
                 max_new_tokens: int = 128, cache_root: str = "/tmp", progress: Progress | None = None) -> dict:
    """The new and the previous policy answer the same prompts; the reward model judges.

    Win rate of the new policy (ties count half) with its 95% Wilson interval, and ``answers``:
    per prompt, both generations (text, tokens, finish reason, latency) and both rewards, which
    the round puts before labelers as evaluation pairs.
    """
    from modeling.ml.generation import LocalBackend, ModelSpec, SamplingParams
    from modeling.ml.reward import RewardScorer

    if not prompts:
        return {"prompts": 0, "win_rate": None, "ci95": None, "answers": [], "sampling": None}
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.7, top_p=0.9, seed=1234)
    generations: dict[str, list] = {}
    started, total = time.perf_counter(), 2 * len(prompts)
    # Each policy samples with its own seed, as two members do: with one seed a policy that moved
    # little from its start would give the same answers, pairs no labeler can tell apart.
    for name, path, seed in (("new", new_policy_dir, 1234), ("old", old_policy_dir, 4321)):
        backend = LocalBackend(ModelSpec(kind="local", model_path=path), cache_root)
        generations[name] = []
        for b in range(0, len(prompts), 8):
            generations[name] += backend.generate(prompts[b : b + 8], replace(params, seed=seed + b))
            done = sum(len(a) for a in generations.values())
            elapsed = time.perf_counter() - started
            report(progress, phase=f"{name} policy answering", done=done, total=total, unit="answers",
                    elapsed_s=round(elapsed, 1), eta_s=round(elapsed / done * (total - done), 1))
        del backend
    report(progress, phase="reward model scoring both answers", done=total, total=total, unit="answers")
    scorer = RewardScorer(reward_dir)
    new = scorer.score(prompts, [g.text for g in generations["new"]])
    old = scorer.score(prompts, [g.text for g in generations["old"]])
    wins = sum(1.0 if n > o else 0.5 if n == o else 0.0 for n, o in zip(new, old))
    low, high = wilson_interval(wins, len(prompts))
    fields = ("text", "prompt_tokens", "completion_tokens", "finish_reason", "latency_ms", "error", "engine")
    answer = lambda g: {**{f: getattr(g, f) for f in fields}, "timings": g.timings()}  # noqa: E731
    return {
        "prompts": len(prompts),
        "wins": wins,
        "win_rate": round(wins / len(prompts), 4),
        "ci95": [round(low, 4), round(high, 4)],
        "mean_reward_new": round(sum(new) / len(new), 4),
        "mean_reward_old": round(sum(old) / len(old), 4),
        "sampling": {**params.as_dict(), "seed": {"new": 1234, "old": 4321}},
        "answers": [
            {"new": answer(gn), "old": answer(go),
             "reward_new": float(rn), "reward_old": float(ro)}
            for gn, go, rn, ro in zip(generations["new"], generations["old"], new, old)
        ],
    }
