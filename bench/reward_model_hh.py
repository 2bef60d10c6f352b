"""Reward model on real preferences: HH-RLHF (harmless-base test) imported through the app,
against plain TRL on the same rows, in one invocation.

    python bench/reward_model_hh.py [--train-pairs 800] [--max-length 512] [--lora] [--strength none]
                                    [--center-rewards 0.01] [--learning-rate 1e-5] [--epochs 1]
                                    [--no-reference | --reference-only] [--note "..."] [--no-write]

The app's path: ``parse_hh`` → ``preference_pairs_import`` into a scratch SQLite database → the
round's snapshot rows (``export_rows``: margins from the project's table, 0 for pairs whose
source gave no strength; the stable split by prompt: 20% held out) → ``train_reward_model`` on
SmolLM2-135M-Instruct (GGUF dequantized) → held-out pairwise accuracy with a 95% Wilson
interval. The reference (``plain_trl``): the same training and held-out rows given to TRL's
``RewardTrainer`` directly, with the settings of the reference run in ../shared/TRL-NOTES.md
(1 epoch, batch 4, lr 1e-5, max_length 512, bf16 on CPU, full fine-tuning, no centring, the
rows' ``margin`` column) whatever the app's flags say, and scored by a few lines of plain
transformers: no app code.
``--strength better`` reproduces the old import, which gave every HH pair that strength's margin.
The app's training settings are a round's defaults (``DEFAULT_CONFIG["rm"]``: one epoch) with the
flags on top.

Writes bench/results/reward_model_hh.json and its section of docs/benchmarks.md, and adds the run
(each path it ran) as a row of bench/results/reward_model_hh_ablations.json, whose table in
docs/benchmarks.md it rewrites: every ablation is a run of this script, recorded by it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench._common import machine, replace_section, utc_now  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "reward_model_hh.json"
ABLATIONS = RESULTS.with_name("reward_model_hh_ablations.json")
SOUP = RESULTS.with_name("reward_model_hh_soup.json")
HH = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"


def plain_trl(base_dir: str, train: list[dict], heldout: list[dict], output_dir: str, *, batch_size: int,
              learning_rate: float, max_length: int, bf16: bool, epochs: int = 1) -> dict:
    """TRL's RewardTrainer on ``train``, then held-out accuracy: a few lines, no app code."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    columns = ("prompt", "chosen", "rejected", "margin")
    args = RewardConfig(output_dir=output_dir, num_train_epochs=epochs, per_device_train_batch_size=batch_size,
                        learning_rate=learning_rate, max_length=max_length, bf16=bf16, use_cpu=not torch.cuda.is_available(),
                        report_to="none", save_strategy="no", logging_steps=10, disable_tqdm=True, seed=0)
    trainer = RewardTrainer(model=model, args=args, processing_class=tokenizer,
                            train_dataset=Dataset.from_list([{k: r[k] for k in columns} for r in train]))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    model = trainer.model.eval()
    correct = 0
    with torch.no_grad():
        for row in heldout:
            scores = []
            for side in ("chosen", "rejected"):
                ids = tokenizer.apply_chat_template(row["prompt"] + row[side], tokenize=True, return_tensors="pt", return_dict=True)
                ids = {k: v[:, -max_length:].to(model.device) for k, v in ids.items()}
                scores.append(model(**ids).logits[0, 0].float().item())
            correct += scores[0] > scores[1]
    return {"accuracy": round(correct / len(heldout), 4), "pairs": len(heldout), "correct": correct,
            "steps": trainer.state.global_step, "train_seconds": round(seconds, 2)}


def run_reference(args, base, train: list[dict], heldout: list[dict], scratch: str) -> dict:
    """``plain_trl`` with the command line's reference settings, and its Wilson interval."""
    from modeling.ml.evaluation import wilson_interval

    reference = plain_trl(str(base), train, heldout, f"{scratch}/reference", batch_size=args.batch_size,
                          learning_rate=args.reference_learning_rate, max_length=args.max_length, bf16=not args.fp32,
                          epochs=args.reference_epochs)
    reference["ci95"] = [round(x, 4) for x in wilson_interval(reference["correct"], reference["pairs"])]
    return reference


def reference_only(args, base, train: list[dict], heldout: list[dict], scratch: str) -> int:
    """The plain-TRL run alone, on the rows the app's path would train and score."""
    reference = run_reference(args, base, train, heldout, scratch)
    out = {"benchmark": "reward_model_hh_reference", "date": utc_now(), "machine": machine(),
           "train_rows": len(train), **reference,
           "settings": {"batch_size": args.batch_size, "learning_rate": args.reference_learning_rate,
                        "max_length": args.max_length, "bf16": not args.fp32, "epochs": args.reference_epochs, "centring": None}}
    print(json.dumps(out, indent=2))
    if not args.no_write:
        RESULTS.with_name("reward_model_hh_reference.json").write_text(json.dumps(out, indent=2) + "\n")
        record_ablations([_reference_row(out["date"], args, len(train), reference)])
    return 0


def _reference_row(date: str, args, train_rows: int, reference: dict) -> dict:
    return {"date": date, "path": "plain TRL", "strength": "none (rows' margin 0)", "centring": None, "lora": False,
            "learning_rate": args.reference_learning_rate, "epochs": args.reference_epochs, "steps": reference["steps"], "train_pairs": train_rows,
            "heldout_pairs": reference["pairs"], "accuracy": reference["accuracy"], "ci95": reference["ci95"],
            "seconds_per_step": round(reference["train_seconds"] / max(1, reference["steps"]), 2), "note": args.note}


def record_ablations(rows: list[dict]) -> None:
    """Add this run's rows to the ablation record and rewrite its table in docs/benchmarks.md."""
    runs = json.loads(ABLATIONS.read_text()) if ABLATIONS.exists() else []
    runs += rows
    ABLATIONS.write_text(json.dumps(runs, indent=2) + "\n")
    lines = [
        "One row per path of a run of `bench/reward_model_hh.py` (from `bench/results/reward_model_hh_ablations.json`): "
        "SmolLM2-135M-Instruct, bf16 on CPU unless noted, batch 4, max_length 512, the app's split by prompt "
        "(20% held out) unless noted.\n",
        "| run | path | HH strength → margin | centring | LoRA | lr | epochs (steps) | train pairs | held-out accuracy | 95% interval | s/step | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['date']} | {r['path']} | {r['strength']} | {r['centring'] if r['centring'] is not None else 'off'} | "
            f"{'r=16' if r['lora'] else 'no'} | {r['learning_rate']} | {r['epochs'] if r['epochs'] is not None else '–'} ({r['steps'] or '?'}) | "
            f"{r['train_pairs']}{' (%d trimmed)' % r['trimmed_turns'] if r.get('trimmed_turns') else ''} | **{r['accuracy']}** (n = {r['heldout_pairs']}) | {r['ci95'][0]}–{r['ci95'][1]} | "
            f"{r['seconds_per_step'] if r['seconds_per_step'] is not None else '–'} | {r.get('note') or ''} |"
        )
    replace_section("reward_model_hh_ablations", "Reward model on HH-RLHF: ablations", "\n".join(lines))


def soup_run(args, base, train: list[dict], heldout: list[dict], scratch: str, config) -> int:
    """The round's RM averaging (``rm_ensemble``, the code a round with ``averaging.rm_models`` = M
    runs) on these rows; each member is kept (hard links) so the uniform soup of the same members is
    scored as well, whichever soup the round keeps."""
    from modeling.ml.averaging import average_checkpoints
    from modeling.ml.devices import cuda_available
    from modeling.ml.evaluation import evaluate_reward_model, wilson_interval
    from modeling.ml.training import train_reward_model
    from modeling.services.rounds.averaging import rm_ensemble
    from modeling.services.rounds.settings import DEFAULT_CONFIG

    averaging = {**DEFAULT_CONFIG["averaging"], "rm_models": args.rm_models, "rm_soup": args.soup or DEFAULT_CONFIG["averaging"]["rm_soup"]}
    kept = Path(scratch) / "members"
    kept.mkdir()

    def train_one(rows: list[dict], output_dir: Path, member_config):
        result = train_reward_model(base_dir=str(base), rows=rows, heldout=heldout, output_dir=str(output_dir), config=member_config)
        shutil.copytree(output_dir, kept / output_dir.name, copy_function=os.link)
        print(f"{output_dir.name} (seed {member_config.seed}): held-out accuracy {result.heldout['accuracy']}, "
              f"{result.steps} steps in {result.seconds:.0f} s", flush=True)
        return result

    def progress(event: dict) -> None:
        if event.get("log"):
            print(event["log"], flush=True)

    started = time.perf_counter()
    output = Path(scratch) / "rm"
    output.mkdir()
    result, metrics = rm_ensemble(train_one=train_one, rows=train, heldout=heldout, output_dir=output, config=config,
                                  averaging=averaging, progress=progress)
    uniform = metrics["soup_heldout_accuracy"] if metrics["soup"] == "uniform" else None
    if uniform is None:
        average_checkpoints(sorted(kept.iterdir()), Path(scratch) / "uniform")
        uniform = evaluate_reward_model(model_dir=str(Path(scratch) / "uniform"), rows=heldout,
                                        max_length=result.max_length)["accuracy"]
    out = {
        "benchmark": "reward_model_hh_soup", "date": utc_now(), "machine": machine(),
        "device": "cuda" if cuda_available() else "cpu", "heldout_pairs": result.heldout["pairs"],
        "training_rows": len(train), "config": config.as_dict(), "averaging": averaging,
        **metrics, "uniform_soup_heldout_accuracy": uniform,
        "soup_ci95": result.heldout["ci95"], "total_seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(out, indent=2))
    if not args.no_write:
        SOUP.write_text(json.dumps(out, indent=2) + "\n")
        write_soup_doc(out)
        rows = [{
            "date": out["date"], "path": f"app, {label}", "strength": "none → 0", "centring": config.center_rewards_coefficient,
            "lora": config.lora, "learning_rate": config.learning_rate, "epochs": config.epochs, "steps": None,
            "train_pairs": metrics["train_pairs"], "heldout_pairs": out["heldout_pairs"], "accuracy": accuracy,
            "ci95": [round(x, 4) for x in wilson_interval(round(accuracy * out["heldout_pairs"]), out["heldout_pairs"])], "seconds_per_step": None, "note": args.note,
        } for label, accuracy in (
            *((f"member seed {m['seed']}", m["heldout_accuracy"]) for m in metrics["members"]),
            (f"{metrics['soup']} soup of {metrics['models']} (chose {', '.join(metrics['chosen'])})", metrics["soup_heldout_accuracy"]),
            *((("uniform soup of %d" % metrics["models"], uniform),) if metrics["soup"] != "uniform" else ()),
        )]
        record_ablations(rows)
    return 0


def write_soup_doc(r: dict) -> None:
    members = ", ".join(f"seed {m['seed']}: {m['heldout_accuracy']}" for m in r["members"])
    section = (
        f"Run {r['date']} on {r['machine']}, {r['device']}: the round's RM averaging (`averaging.rm_models` = {r['models']}, "
        f"`rm_soup` = {r['soup']}, validation {r['validation_pairs']} pairs held out of the {r['training_rows']} training rows by prompt, "
        f"never the test split), SmolLM2-135M-Instruct, {'LoRA' if r['config']['lora'] else 'full fine-tuning'}, lr {r['config']['learning_rate']}, "
        f"{r['train_pairs']} training pairs per member; held-out test pairs: {r['heldout_pairs']}.\n\n"
        "| model | held-out accuracy |\n|---|---|\n"
        + "".join(f"| member, seed {m['seed']} (validation {m['validation_accuracy']}) | {m['heldout_accuracy']} |\n" for m in r["members"])
        + f"| mean of the members | {r['mean_member_accuracy']} |\n| best member | {r['best_member_accuracy']} |\n"
        f"| **{r['soup']} soup** (chose {', '.join(r['chosen'])}) | **{r['soup_heldout_accuracy']}** ({r['soup_ci95'][0]}–{r['soup_ci95'][1]}) |\n"
        + (f"| uniform soup of all {r['models']} | {r['uniform_soup_heldout_accuracy']} |\n" if r["soup"] != "uniform" else "")
        + f"\nMembers: {members}. Total {r['total_seconds']:.0f} s."
    )
    replace_section("reward_model_hh_soup", "Reward-model soup on HH-RLHF (`bench/reward_model_hh.py --rm-models 3`)", section)


def _separate_reference(r: dict) -> str:
    """The line for a run without the reference: the latest ``--reference-only`` run on the same
    rows if there is one, else TRL-NOTES.md's figure (its own split)."""
    path = RESULTS.with_name("reward_model_hh_reference.json")
    if path.exists():
        ref = json.loads(path.read_text())
        if ref.get("pairs") == r["heldout_pairs"]:
            return (f"Plain TRL on the same rows, in a separate invocation ({ref['date']}, `--reference-only`): "
                    f"**{ref['accuracy']}** ({ref['ci95'][0]}–{ref['ci95'][1]}) on {ref['pairs']} pairs, {ref['steps']} steps; "
                    f"app minus reference: {r['heldout_accuracy'] - ref['accuracy']:+.4f}. Not the same invocation: "
                    "`reference_accuracy` is absent from the JSON until a run without `--no-reference`.")
    return "Reference (TRL-NOTES.md, plain TRL on the same file, 800 pairs, bf16 CPU): 0.627 (0.583-0.671) on 469 pairs, ≈11.6 s/step."


def write_doc(r: dict) -> None:
    c = r["config"]
    section = (
                f"Run {r['date']} on {r['machine']}, {r['device']}: SmolLM2-135M-Instruct + 1-output head, "
        f"{'LoRA r=16' if c['lora'] else 'full fine-tuning'}, {'bf16' if c['bf16'] else 'fp32'}, {r['train_pairs']} training pairs "
        f"({r.get('trimmed_turns', 0)} kept by dropping their oldest turns, {r['dropped_too_long']} dropped as longer than "
        f"{c['max_length']} tokens), {r['steps']} steps of batch {c['batch_size']}, "
        f"lr {c['learning_rate']}, margin {r['margin']} (imported HH pairs carry strength {r['strength'] or 'none'}), "
        f"center_rewards_coefficient {c['center_rewards_coefficient']}. Imported through the app: {r['imported_pairs']} pairs; "
        f"split by prompt, 20% held out.\n\n"
        "| held-out pairs | accuracy | 95% interval | s/step | training time | peak RSS |\n|---|---|---|---|---|---|\n"
        f"| {r['heldout_pairs']} | **{r['heldout_accuracy']}** | {r['ci95_low']}–{r['ci95_high']} | {r['seconds_per_step']} | "
        f"{r['train_seconds']:.0f} s | {r['peak_rss_mb']:.0f} MB |\n\n"
        + (
            f"Plain TRL on the same rows, same invocation: **{r['reference_accuracy']}** "
            f"({r['reference_ci95'][0]}–{r['reference_ci95'][1]}) on {r['reference_pairs']} pairs, {r['reference_steps']} steps in "
            f"{r['reference_train_seconds']:.0f} s; app minus reference: {r['difference']:+.4f}."
            if "reference_accuracy" in r else _separate_reference(r)
        )
    )
    replace_section("reward_model_hh", "Reward model on HH-RLHF (`bench/reward_model_hh.py`)", section)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-pairs", type=int, default=800)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="the app's learning rate (default: the round's, DEFAULT_CONFIG['rm'])")
    parser.add_argument("--reference-learning-rate", type=float, default=1e-5,
                        help="plain TRL's, fixed at TRL-NOTES.md's run so the reference stays one yardstick across ablations")
    parser.add_argument("--reference-epochs", type=int, default=1,
                        help="plain TRL's epochs (default 1, TRL-NOTES.md's run); with --reference-learning-rate 3e-5 "
                             "and 2, plain TRL at the round's own settings")
    parser.add_argument("--lora", action=argparse.BooleanOptionalAction, default=None,
                        help="LoRA (--lora) or full fine-tuning (--no-lora); default: the round's (DEFAULT_CONFIG['rm'])")
    parser.add_argument("--fp32", action="store_true", help="fp32 instead of bf16")
    parser.add_argument("--heldout-limit", type=int, default=0, help="evaluate on at most this many held-out pairs (0: all)")
    parser.add_argument("--strength", default="none",
                        help="strength given to the imported pairs: none (HH has none: margin 0, the app's default) or a level")
    parser.add_argument("--center-rewards", type=float, default=0.01, help="the app's center_rewards_coefficient (0: off)")
    parser.add_argument("--epochs", type=float, default=None,
                        help="epochs over the training pairs (the app's path; default: the round's, DEFAULT_CONFIG['rm'])")
    parser.add_argument("--seed", type=int, default=0, help="the app's training seed (head initialisation and data order)")
    parser.add_argument("--note", default="", help="what this run changes, for its row in the ablation table")
    parser.add_argument("--no-reference", action="store_true", help="skip the plain-TRL run on the same rows")
    parser.add_argument("--reference-only", action="store_true",
                        help="only the plain-TRL run on the app's rows (writes reward_model_hh_reference.json)")
    parser.add_argument("--ablation", action="store_true",
                        help="record the run as an ablation row only (reward_model_hh.json and its section stay as they are)")
    parser.add_argument("--rm-models", type=int, default=1,
                        help="M > 1: the round's weight averaging (averaging.rm_models): M reward models, seeds 0..M-1, "
                             "and their soup, against the mean and the best member; written to reward_model_hh_soup.json")
    parser.add_argument("--soup", choices=("greedy", "uniform"), default=None,
                        help="the soup kept by the round (default: the round's, DEFAULT_CONFIG['averaging']['rm_soup']); "
                             "the uniform soup of the same members is scored too")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    scratch = tempfile.mkdtemp(prefix="arbiter-rm-bench-")
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "ARBITER_VAR_DIR": scratch,
            "DATABASE_URL": f"sqlite:///{scratch}/bench.sqlite3",
            "ARBITER_DEMO": "false",
            "LOG_LEVEL": "WARNING",
        }
    )
    for key in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "ARBITER_MODE"):
        os.environ.pop(key, None)
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    import torch

    from annotation.exports import ExportFilters, export_rows, is_heldout
    from annotation.importers import parse_hh
    from annotation.models import Project, Strength
    from annotation.services import preference_pairs_import
    from modeling.ml.devices import cuda_available
    from modeling.ml.generation import ModelSpec, resolve_local_dir
    from modeling.ml.training import TrainConfig, train_reward_model
    from modeling.services.members import SMOLLM2_GGUF, SMOLLM2_PACKAGE

    project = Project.objects.create(name="HH-RLHF bench", slug="hh-bench")
    with gzip.open(HH, "rt", encoding="utf-8") as lines:
        pairs, skipped = parse_hh(lines)
    strength = None if args.strength == "none" else Strength(args.strength)
    imported = preference_pairs_import(project=project, pairs=pairs, source="hh-rlhf", strength=strength)
    # The rows a round's snapshot holds (modeling.services.rounds.snapshot_filters), split here at 20%.
    everything = ExportFilters.from_dict({"exclude_gold": False, "include_imported": True})
    rows = list(export_rows(project=project, format="trl-preference", filters=everything))
    train = [r for r in rows if not is_heldout(r["prompt_hash"], 20)][: args.train_pairs]
    heldout = [r for r in rows if is_heldout(r["prompt_hash"], 20)]
    if args.heldout_limit:
        heldout = heldout[: args.heldout_limit]
    print(f"imported {imported.comparisons_created} pairs ({len(skipped)} skipped); train {len(train)}, held out {len(heldout)}", flush=True)

    import importlib.util

    package = importlib.util.find_spec(SMOLLM2_PACKAGE).submodule_search_locations[0]
    base = resolve_local_dir(ModelSpec(kind="local", model_path=package, gguf_file=SMOLLM2_GGUF), ROOT / "artifacts" / "models")
    # A round's reward-model settings (one epoch over the pairs, capped by max_steps), with the flags on top.
    from modeling.services.rounds.settings import DEFAULT_CONFIG

    config = TrainConfig(**{
        **DEFAULT_CONFIG["rm"], "epochs": args.epochs or DEFAULT_CONFIG["rm"]["epochs"], "batch_size": args.batch_size,
        "learning_rate": args.learning_rate or DEFAULT_CONFIG["rm"]["learning_rate"],
        "max_length": args.max_length, "bf16": not args.fp32,
        "lora": DEFAULT_CONFIG["rm"].get("lora", TrainConfig.lora) if args.lora is None else args.lora,
        "center_rewards_coefficient": args.center_rewards or None, "seed": args.seed,
    })
    if args.reference_only:
        return reference_only(args, base, train, heldout, scratch)
    if args.rm_models > 1:
        return soup_run(args, base, train, heldout, scratch, config)
    started = time.perf_counter()
    result = train_reward_model(base_dir=str(base), rows=train, heldout=heldout, output_dir=f"{scratch}/rm", config=config)
    total = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    reference = None
    if not args.no_reference:
        print(f"app: held-out accuracy {result.heldout['accuracy']}; now plain TRL on the same {len(train)} rows", flush=True)
        reference = run_reference(args, base, train, heldout, scratch)
    out = {
        "benchmark": "reward_model_hh",
        "date": utc_now(),
        "machine": machine(),
        "device": "cuda" if cuda_available() else "cpu",
        "torch": torch.__version__,
        "imported_pairs": imported.comparisons_created,
        "skipped_rows": len(skipped),
        "strength": strength,
        "margin": project.margin_for(strength),
        "train_pairs": result.train_pairs,
        "dropped_too_long": result.dropped_too_long,
        "trimmed_turns": result.trimmed_turns,
        "heldout_pairs": result.heldout["pairs"],
        "heldout_accuracy": result.heldout["accuracy"],
        "ci95_low": result.heldout["ci95"][0],
        "ci95_high": result.heldout["ci95"][1],
        "steps": result.steps,
        "train_seconds": result.seconds,
        "seconds_per_step": round(result.seconds / max(1, result.steps), 2),
        "total_seconds": round(total, 1),
        "peak_rss_mb": round(peak_mb, 1),
        "train_loss": result.train_loss,
        "config": config.as_dict(),
        "settings_artifacts": str(settings.ARTIFACTS_DIR),
    }
    if reference is not None:
        out.update(reference_accuracy=reference["accuracy"], reference_ci95=reference["ci95"],
                   reference_pairs=reference["pairs"], reference_steps=reference["steps"],
                   reference_train_seconds=reference["train_seconds"],
                   difference=round(out["heldout_accuracy"] - reference["accuracy"], 4))
    print(json.dumps(out, indent=2))
    if not args.no_write:
        if not args.ablation:
            RESULTS.write_text(json.dumps(out, indent=2) + "\n")
            write_doc(out)
        rows = [{
            "date": out["date"], "path": "app", "strength": f"{strength or 'none'} → {out['margin']:.3g}",
            "centring": config.center_rewards_coefficient, "lora": config.lora, "learning_rate": config.learning_rate,
            "epochs": config.epochs, "steps": result.steps, "train_pairs": result.train_pairs, "trimmed_turns": result.trimmed_turns,
            "heldout_pairs": out["heldout_pairs"],
            "accuracy": out["heldout_accuracy"], "ci95": [out["ci95_low"], out["ci95_high"]], "seconds_per_step": out["seconds_per_step"],
            "note": args.note,
        }]
        if reference is not None:
            rows.append(_reference_row(out["date"], args, len(train), reference))
        record_ablations(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
