"""Reward-model and DPO training with Hugging Face TRL (their evaluation: ``evaluation.py``). Plain Python.

Rows are TRL's conversational preference format: ``prompt`` (messages), ``chosen`` and
``rejected`` (one assistant message each), ``margin`` (from the strength), ``strength``.
Every function writes only into the ``output_dir`` it is given; the caller renames finished
folders into place. Facts behind the defaults: ``../shared/TRL-NOTES.md``.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

#: Receives progress reports while a step runs: ``{"phase", "done", "total", "unit", "elapsed_s",
#: "eta_s", "loss"?, "accuracy"?, "log"?}``. ``log`` is a line for the round's log (the trainer's
#: metrics), present only on the reports that carry one. Called in the training process's main
#: thread; the caller decides where it goes (a database row, a file).
Progress = Callable[[dict], None]
#: Seconds between two step reports (log lines are always reported).
REPORT_EVERY_S = 2.0
#: Trainer log lines per training run: about this many, whatever max_steps is.
LOG_LINES = 20


@dataclass(frozen=True)
class TrainConfig:
    """Settings shared by the RM and DPO steps (one round's ``config`` feeds these)."""

    max_steps: int = 100  # with ``epochs``: the most steps, whatever the data's size
    epochs: float | None = None  # None: exactly max_steps; else ceil(epochs x pairs / batch_size), capped
    batch_size: int = 4
    learning_rate: float = 1e-5
    # None: fitted to the round's data, the longest pair rounded up to a multiple of 64 tokens, at
    # most max_length_cap (and the model's context); a number: exactly that. Longer pairs are
    # trimmed (trim_turns) or dropped.
    max_length: int | None = None
    max_length_cap: int = 2048
    # A pair over max_length loses the oldest turns of its conversation (a user turn and the answer
    # to it at a time; a system message stays) until it fits; False: it is dropped, as TRL would.
    trim_turns: bool = True
    bf16: bool | None = None  # None: on when the device supports it (CUDA bf16), off on CPU
    gradient_checkpointing: bool = False
    lora: bool = True
    lora_r: int = 16
    seed: int = 0
    # reward model
    center_rewards_coefficient: float | None = 0.01
    # DPO (Llama 3: beta 0.1, lr 1e-5, NLL on chosen weighted 0.2)
    beta: float = 0.1
    sft_weight: float = 0.2

    def as_dict(self) -> dict:
        return asdict(self)


#: Settings that must be above 0 (a batch of 0 would divide by zero hours into a round).
POSITIVE_SETTINGS = frozenset({"max_steps", "epochs", "batch_size", "learning_rate", "max_length", "max_length_cap", "lora_r", "beta"})


def _train_settings_schema() -> dict:
    """TrainConfig as a JSON schema (``int | None`` -> a nullable integer, ...), read from its
    annotations so a new setting is published and checked without a second declaration."""
    import types
    import typing

    json_types = {int: "integer", float: "number", bool: "boolean"}
    properties = {}
    for name, hint in typing.get_type_hints(TrainConfig).items():
        kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        schema = {"type": json_types[kinds[0]]}
        if type(None) in kinds:
            schema["nullable"] = True
        if name in POSITIVE_SETTINGS:
            schema.update(minimum=0, exclusiveMinimum=True)
        properties[name] = schema
    return {"type": "object", "additionalProperties": False, "properties": properties}


#: The JSON schema of one training step's settings (a round's ``rm`` and ``dpo``): what the API
#: publishes and what the round service checks (config/schema.py's subset of JSON Schema).
TRAIN_SETTINGS_SCHEMA = _train_settings_schema()

#: A fitted max_length is a multiple of this (fewer distinct shapes; a little room past the longest).
MAX_LENGTH_STEP = 64


@dataclass
class RewardResult:
    output_dir: str
    train_pairs: int
    dropped_too_long: int
    steps: int
    seconds: float
    train_loss: float | None
    heldout: dict = field(default_factory=dict)  # accuracy overall and per strength
    max_length: int | None = None  # what the training used (fitted when the setting is None)
    trimmed_turns: int = 0  # pairs kept by dropping their oldest turns (TrainConfig.trim_turns)


@dataclass
class DPOResult:
    output_dir: str
    train_pairs: int
    steps: int
    seconds: float
    train_loss: float | None
    heldout: dict = field(default_factory=dict)
    max_length: int | None = None
    dropped_too_long: int = 0
    trimmed_turns: int = 0


def _device_bf16(config: TrainConfig) -> bool:
    from modeling.ml.devices import bf16_supported

    return config.bf16 if config.bf16 is not None else bf16_supported()


def train_steps(config: TrainConfig, pairs: int) -> int:
    """Optimizer steps for ``pairs`` training pairs: a number of epochs scales with the data (50
    pairs are not trained for as many steps as 50,000), capped by ``max_steps``."""
    if config.epochs is None:
        return config.max_steps
    return max(1, min(config.max_steps, math.ceil(config.epochs * pairs / config.batch_size)))


def _trainer_args(config: TrainConfig, output_dir: str, steps: int) -> dict:
    """TrainingArguments shared by the RM and DPO trainers: no checkpoints, no reporting."""
    from modeling.ml.devices import cuda_available

    return {
        "output_dir": str(Path(output_dir) / "trainer"),
        "max_steps": steps,
        "per_device_train_batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "max_length": config.max_length,
        "bf16": _device_bf16(config),
        "use_cpu": not cuda_available(),  # transformers refuses bf16 on CPU without it
        "gradient_checkpointing": config.gradient_checkpointing,
        "logging_steps": max(1, steps // LOG_LINES),
        "save_strategy": "no",
        "report_to": "none",
        "seed": config.seed,
        "disable_tqdm": True,
    }


def report(progress: Progress | None, **fields) -> None:
    if progress is not None:
        progress(fields)


def _progress_callback(progress: Progress, *, phase: str):
    """A TrainerCallback that reports the step, the latest loss and accuracy, the time spent and
    an ETA (from the mean step time so far) at most every ``REPORT_EVERY_S`` seconds, and every
    trainer log entry as a log line. Only the main process reports (under accelerate launch)."""
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):
        def __init__(self):
            self.started = time.perf_counter()
            self.sent = 0.0
            self.latest: dict = {}

        def _send(self, state, log: str | None = None) -> None:
            if not state.is_world_process_zero:
                return
            elapsed = time.perf_counter() - self.started
            done, total = state.global_step, state.max_steps
            eta = elapsed / done * (total - done) if done else None
            report = {"phase": phase, "done": done, "total": total, "unit": "steps", "elapsed_s": round(elapsed, 1),
                      "eta_s": None if eta is None else round(eta, 1), **self.latest}
            if log:
                report["log"] = log
            progress(report)
            self.sent = time.perf_counter()

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()
            self._send(state)

        def on_step_end(self, args, state, control, **kwargs):
            if time.perf_counter() - self.sent >= REPORT_EVERY_S or state.global_step == state.max_steps:
                self._send(state)

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "loss" not in logs:
                return  # the end-of-training summary and eval logs; their numbers land in the metrics
            accuracy = logs.get("accuracy", logs.get("rewards/accuracies"))
            self.latest = {"loss": round(float(logs["loss"]), 4)}
            if accuracy is not None:
                self.latest["accuracy"] = round(float(accuracy), 4)
            shown = {k: v for k, v in logs.items() if isinstance(v, (int, float)) and k not in ("epoch", "step")}
            line = f"step {state.global_step}/{state.max_steps}: " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items())
            self._send(state, log=line)

    return _Progress()


def _conversation(row: dict, side: str) -> list[dict]:
    return [*row["prompt"], *row[side]]


def pair_length(tokenizer, row: dict) -> int:
    """Tokens of the longer side of a pair (prompt and answer, with the chat template)."""
    longest = 0
    for side in ("chosen", "rejected"):
        ids = tokenizer.apply_chat_template(_conversation(row, side), tokenize=True)
        if hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        longest = max(longest, len(ids))
    return longest


def fit_max_length(lengths: list[int], *, cap: int) -> int:
    """The max_length for pairs of these token ``lengths``: the longest rounded up to a multiple of
    MAX_LENGTH_STEP, at most ``cap``. Short data gets a short limit (no 512 for 200-token pairs,
    less memory), long data is not dropped at an arbitrary 512."""
    longest = max(lengths, default=MAX_LENGTH_STEP)
    return max(MAX_LENGTH_STEP, min(cap, -(-longest // MAX_LENGTH_STEP) * MAX_LENGTH_STEP))


def _context_limit(config: TrainConfig, model_dir: str) -> int:
    """max_length_cap, lowered to the model's context window when its config says one."""
    from transformers import AutoConfig

    context = getattr(AutoConfig.from_pretrained(model_dir), "max_position_embeddings", None)
    return min(config.max_length_cap, context) if isinstance(context, int) and context > 0 else config.max_length_cap


def trim_oldest_turns(tokenizer, row: dict, max_length: int) -> dict | None:
    """The pair without the oldest exchanges of its conversation (a user turn and the answer to it
    at a time; a leading system message stays), as few as make it fit in ``max_length``; None
    when even the last user turn with the two answers does not fit."""
    prompt = list(row["prompt"])
    head = prompt[:1] if prompt and prompt[0].get("role") == "system" else []
    body = prompt[len(head):]
    while True:
        cut = next((i + 1 for i, m in enumerate(body[:-1]) if m.get("role") == "assistant"), None)
        if cut is None:
            return None
        body = body[cut:]
        candidate = {**row, "prompt": head + body}
        if pair_length(tokenizer, candidate) <= max_length:
            return candidate


def _fit(tokenizer, rows: list[dict], config: TrainConfig, model_dir: str) -> tuple[TrainConfig, list[dict], int]:
    """The config with its max_length decided, the rows that fit in it (with ``trim_turns``, long
    ones without their oldest turns), and how many were trimmed."""
    lengths = [pair_length(tokenizer, r) for r in rows]
    max_length = config.max_length or fit_max_length(lengths, cap=_context_limit(config, model_dir))
    kept, trimmed = [], 0
    for row, n in zip(rows, lengths):
        if n > max_length:
            row = trim_oldest_turns(tokenizer, row, max_length) if config.trim_turns else None
            if row is None:
                continue
            trimmed += 1
        kept.append(row)
    return replace(config, max_length=max_length), kept, trimmed


def _fit_log(config: TrainConfig, kept: list, rows: list, trimmed: int) -> str:
    return (f"max_length {config.max_length} tokens; {len(kept)} of {len(rows)} pairs fit"
            + (f" ({trimmed} once their oldest turns were dropped)" if trimmed else ""))


def _quiet_datasets() -> None:
    """datasets' map/filter progress bars go to stderr, which a Celery worker logs as warnings
    ("celery.redirected"); progress goes through ``progress`` instead."""
    import datasets

    datasets.disable_progress_bars()


def _last_loss(trainer) -> float | None:
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return float(losses[-1]) if losses else None


def train_reward_model(*, base_dir: str, rows: list[dict], heldout: list[dict], output_dir: str, config: TrainConfig,
                       progress: Progress | None = None) -> RewardResult | None:
    """Bradley-Terry RM with the margin term (Llama 2) on a 1-output head over the base model.
    Returns None in the non-main processes of a multi-process (accelerate) run.

    Pairs longer than ``max_length`` would be dropped silently by TRL: they are counted here.
    """
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    _quiet_datasets()
    torch.manual_seed(config.seed)
    report(progress, phase="loading", done=0, total=len(rows), unit="pairs", log=f"loading {base_dir}; measuring {len(rows)} pairs")
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config, kept, trimmed = _fit(tokenizer, rows, config, base_dir)
    if not kept:
        raise ValueError(f"no training pair fits in max_length={config.max_length} ({len(rows)} pairs in the snapshot)")
    report(progress, phase="loading", done=0, total=len(rows), unit="pairs", log=_fit_log(config, kept, rows, trimmed))
    model = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    peft_config = None
    if config.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(
            task_type="SEQ_CLS", r=config.lora_r, lora_alpha=2 * config.lora_r, target_modules="all-linear",
            modules_to_save=["score"],  # the new head must train
        )
    args = RewardConfig(
        **_trainer_args(config, output_dir, train_steps(config, len(kept))),
        center_rewards_coefficient=config.center_rewards_coefficient,
    )
    columns = ("prompt", "chosen", "rejected", "margin")
    dataset = Dataset.from_list([{k: r[k] for k in columns} for r in kept])
    callbacks = [_progress_callback(progress, phase="training")] if progress else None
    trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config,
                            callbacks=callbacks)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    trainer.accelerator.wait_for_everyone()
    if not trainer.accelerator.is_main_process:  # under accelerate launch, one process writes
        return None
    final = trainer.accelerator.unwrap_model(trainer.model)
    if config.lora:
        final = final.merge_and_unload()
    final.config.pad_token_id = tokenizer.pad_token_id
    final.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    shutil.rmtree(Path(output_dir) / "trainer", ignore_errors=True)
    result = RewardResult(
        output_dir=output_dir, train_pairs=len(kept), dropped_too_long=len(rows) - len(kept),
        steps=trainer.state.global_step, seconds=round(seconds, 2), train_loss=_last_loss(trainer),
        max_length=config.max_length, trimmed_turns=trimmed,
    )
    del trainer, model, final
    report(progress, phase="evaluating", done=0, total=len(heldout), unit="pairs",
            log=f"trained {result.steps} steps in {result.seconds} s; scoring {len(heldout)} held-out pairs")
    from modeling.ml.evaluation import evaluate_reward_model

    result.heldout = evaluate_reward_model(model_dir=output_dir, rows=heldout, max_length=config.max_length)
    return result


def train_dpo(*, policy_dir: str, rows: list[dict], heldout: list[dict], output_dir: str, config: TrainConfig,
              progress: Progress | None = None) -> DPOResult | None:
    """DPO (+ NLL on chosen, Llama 3 / RPO) from the starting policy, LoRA by default; the
    reference is the starting policy itself (the base with the new adapter disabled).

    Saves the merged policy (a plain model folder any backend loads) and the adapter beside it.
    """
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    if not rows:
        raise ValueError("no DPO pair in this round's snapshot (after the strength filter)")
    _quiet_datasets()
    report(progress, phase="loading", done=0, total=len(rows), unit="pairs", log=f"loading {policy_dir}; {len(rows)} pairs")
    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config, kept, trimmed = _fit(tokenizer, rows, config, policy_dir)
    if not kept:
        raise ValueError(f"no DPO pair fits in max_length={config.max_length} ({len(rows)} pairs in the snapshot)")
    report(progress, phase="loading", done=0, total=len(rows), unit="pairs", log=_fit_log(config, kept, rows, trimmed))
    dropped, rows = len(rows) - len(kept), kept
    model = AutoModelForCausalLM.from_pretrained(policy_dir)
    peft_config, ref_model = None, None
    if config.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(task_type="CAUSAL_LM", r=config.lora_r, lora_alpha=2 * config.lora_r, target_modules="all-linear")
    else:
        ref_model = AutoModelForCausalLM.from_pretrained(policy_dir)  # an in-memory model has no path TRL can reload
    args = DPOConfig(
        **_trainer_args(config, output_dir, train_steps(config, len(rows))),
        per_device_eval_batch_size=config.batch_size,
        beta=config.beta,
        loss_type=["sigmoid", "sft"] if config.sft_weight else ["sigmoid"],
        loss_weights=[1.0, config.sft_weight] if config.sft_weight else None,
    )
    columns = ("prompt", "chosen", "rejected")
    train = Dataset.from_list([{k: r[k] for k in columns} for r in rows])
    evaluation = Dataset.from_list([{k: r[k] for k in columns} for r in heldout]) if heldout else None
    trainer = DPOTrainer(
        model=model, ref_model=ref_model, args=args, train_dataset=train, eval_dataset=evaluation,
        processing_class=tokenizer, peft_config=peft_config,
        callbacks=[_progress_callback(progress, phase="training")] if progress else None,
    )
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    trainer.accelerator.wait_for_everyone()
    heldout_metrics = {}
    if evaluation is not None:
        report(progress, phase="evaluating", done=0, total=len(heldout), unit="pairs",
                log=f"trained {trainer.state.global_step} steps in {seconds:.1f} s; DPO metrics on {len(heldout)} held-out pairs")
        raw = trainer.evaluate()
        heldout_metrics = {
            k.removeprefix("eval_"): round(float(v), 4)
            for k, v in raw.items()
            if k.startswith(("eval_rewards/", "eval_loss"))
        }
        heldout_metrics["pairs"] = len(heldout)
    if not trainer.accelerator.is_main_process:  # under accelerate launch, one process writes
        return None
    final = trainer.accelerator.unwrap_model(trainer.model)
    if config.lora:
        final.save_pretrained(str(Path(output_dir) / "adapter"))
        final = final.merge_and_unload()
    final.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    shutil.rmtree(Path(output_dir) / "trainer", ignore_errors=True)
    return DPOResult(
        output_dir=output_dir, train_pairs=len(rows), steps=trainer.state.global_step, seconds=round(seconds, 2),
        train_loss=_last_loss(trainer), heldout=heldout_metrics, max_length=config.max_length, dropped_too_long=dropped,
        trimmed_turns=trimmed,
    )
