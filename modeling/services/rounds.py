"""Retraining rounds: snapshot → reward model → DPO policy → evaluation → registration.

The Round row is the job. ``round_execute`` runs the steps not yet recorded in
``step_timings``, so a retried round resumes where it failed; every step writes its files into
a temporary folder and renames it into place last, so a half-written checkpoint is never
read. A heartbeat thread keeps ``heartbeat_at`` fresh while a step runs; the jobs' watchdog
(modeling/services/watchdog.py) fails rounds whose worker died and re-sends rounds whose message
was lost. Labels are only
read here, never written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Max
from django.utils import timezone

from annotation.models import (
    AuditAction,
    DatasetSnapshot,
    Judgment,
    PolicyAdmission,
    Project,
    SnapshotPurpose,
    Strength,
)
from annotation.services.audit import audit_record
from config.jobs import job_claim, send_after_commit
from modeling.models import ACTIVE_ROUND_STATES, CommitteeMember, MemberKind, Round, RoundState
from modeling.selectors import REWARD_MODEL_DIR, current_reward_model
from modeling.services.members import member_spec

logger = logging.getLogger(__name__)

POLICY_DIR = "policy"
SNAPSHOT_DIR = "snapshot"
#: Well inside Round.stale_after (5 minutes), after which the watchdog calls the worker lost.
HEARTBEAT_EVERY_S = 15

DEFAULT_CONFIG = {
    "heldout_percent": 10,
    "dpo_strengths": [Strength.SIGNIFICANTLY_BETTER, Strength.BETTER],  # Llama 3 kept only these
    "eval_prompts": 16,
    "eval_max_new_tokens": 128,
    # One epoch over the round's pairs (Llama 2 trained its RMs for one), at most 500 steps: 50 pairs
    # are not trained for as many steps as 50,000, which fixed step counts did (8 epochs of the demo).
    # max_length None: fitted to the round's pairs (the longest, rounded up to 64 tokens, at most
    # max_length_cap 2048 and the model's context); pairs over it are dropped and counted.
    "rm": {"epochs": 1, "max_steps": 500, "batch_size": 4, "learning_rate": 1e-5, "max_length": None},
    "dpo": {"epochs": 1, "max_steps": 500, "batch_size": 2, "learning_rate": 1e-5, "max_length": None, "beta": 0.1, "sft_weight": 0.2},
    # None: train in the worker's process. {"num_processes": N, "args": [...]}: run the training
    # under `accelerate launch` (several GPUs; DDP/FSDP/DeepSpeed through its own flags/config).
    "accelerate": None,
}


# Named starting points for a round's settings; a round's own settings apply on top. "quick" is
# for a first look on a CPU (the demo's ~50 pairs in minutes): one pass, fewer steps, a short
# head-to-head. "standard" is DEFAULT_CONFIG.
PRESETS = {
    "quick": {
        "eval_prompts": 4,
        "eval_max_new_tokens": 64,
        "rm": {"epochs": 1, "max_steps": 40},
        "dpo": {"epochs": 1, "max_steps": 30},
    },
    "standard": {},
}


class RoundError(Exception):
    """A round that cannot start, retry or run; the message says why (a 400 on the API)."""


class RoundConflict(RoundError):
    """Another round of the project is queued or running, or this one cannot change state (a 409)."""


def _is(value, kinds: tuple) -> bool:
    """``value`` is a JSON value of one of ``kinds`` (a bool is no int in JSON)."""
    return isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)


#: JSON types of the training settings, from TrainConfig's annotations ("float | None", ...).
_TRAIN_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,)}


def _check_types(overrides: dict) -> None:
    """Wrong types are refused here, with the setting's name, not in the worker hours later
    (and ``accelerate.num_processes: "x"`` was a 500 here). Schema: modeling/serializers.py."""
    from dataclasses import fields

    from modeling.ml.training import POSITIVE_SETTINGS, TrainConfig

    train_types = {}
    for f in fields(TrainConfig):
        kinds = tuple(k for part in str(f.type).split("|") for k in _TRAIN_TYPES.get(part.strip(), ()))
        train_types[f.name] = (kinds, "None" in str(f.type))
    for key, value in overrides.items():
        if key in ("heldout_percent", "eval_prompts", "eval_max_new_tokens"):
            low, high = {"heldout_percent": (0, 100), "eval_prompts": (0, None), "eval_max_new_tokens": (1, None)}[key]
            if not _is(value, (int,)) or value < low or (high is not None and value > high):
                raise RoundError(f"{key}: expected a whole number from {low}" + (f" to {high}" if high else " up"))
        elif key == "dpo_strengths":
            if not isinstance(value, list) or not all(isinstance(v, str) and v in Strength.values for v in value):
                raise RoundError(f"dpo_strengths: expected a list of {', '.join(Strength.values)}")
        elif key == "accelerate" and value is not None:
            if (
                not isinstance(value, dict)
                or set(value) - {"num_processes", "args"}
                or not _is(value.get("num_processes", 1), (int,))
                or value.get("num_processes", 1) < 1
                or not isinstance(value.get("args", []), list)
                or not all(isinstance(a, str) for a in value.get("args", []))
            ):
                raise RoundError('accelerate: expected null or {"num_processes": N, "args": ["--flag", ...]}')
        elif key in ("rm", "dpo") and isinstance(value, dict):
            for name, setting in value.items():
                kinds, nullable = train_types.get(name, ((), False))
                if kinds and not (setting is None and nullable) and not _is(setting, kinds):
                    raise RoundError(f"{key}.{name}: expected {'/'.join(k.__name__ for k in kinds)}, got {setting!r}")
                if name in POSITIVE_SETTINGS and setting is not None and not setting > 0:
                    raise RoundError(f"{key}.{name}: must be above 0, got {setting!r}")


def _merged_config(overrides: dict | None, preset: str = "standard") -> dict:
    """DEFAULT_CONFIG, then the preset's settings, then ``overrides``; checked, with the preset's
    name kept in the result."""
    if preset not in PRESETS:
        raise RoundError(f"preset: expected one of {', '.join(PRESETS)}, got {preset!r}")
    config = json.loads(json.dumps(DEFAULT_CONFIG))
    _apply(config, PRESETS[preset])
    _apply(config, overrides or {})
    config["preset"] = preset
    from modeling.ml.training import TrainConfig

    for part in ("rm", "dpo"):
        try:
            TrainConfig(**config[part])
        except TypeError as exc:
            raise RoundError(f"{part}: {exc}") from None
    return config


def _apply(config: dict, overrides: dict) -> None:
    _check_types({key: value for key, value in overrides.items() if key in config})
    for key, value in overrides.items():
        if key not in config:
            raise RoundError(f"unknown round setting {key!r}; known: {', '.join(sorted(config))}")
        if key == "accelerate":
            config[key] = value
        elif isinstance(config[key], dict):
            if not isinstance(value, dict):
                raise RoundError(f"{key}: expected an object of settings")
            config[key].update(value)
        else:
            config[key] = value


@transaction.atomic
def round_start(*, project: Project, user=None, config: dict | None = None, preset: str = "standard") -> Round:
    """Queue a round with a preset's settings and ``config`` on top; the task is sent once the
    row is committed. One active round per project."""
    from modeling import tasks

    merged = _merged_config(config, preset)
    number = (Round.objects.filter(project=project).aggregate(n=Max("number"))["n"] or 0) + 1
    try:
        with transaction.atomic():
            round_ = Round.objects.create(project=project, number=number, config=merged, created_by=user)
    except IntegrityError:
        raise RoundConflict("A round is already queued or running in this project") from None
    audit_record(
        action=AuditAction.ROUND_STARTED, project=project, target=f"round {number}", actor=user,
        details={"round": round_.pk, "scheduled": user is None, "config": merged},
    )
    send_after_commit(tasks.round_run, round_.pk)
    return round_


@transaction.atomic
def round_retry(*, round_: Round, user=None) -> Round:
    """Queue a failed or cancelled round again; it resumes at its first unfinished step."""
    from modeling import tasks

    if round_.state not in (RoundState.FAILED, RoundState.CANCELLED):
        raise RoundConflict(f"Only a failed or cancelled round can be retried (this one is {round_.state})")
    try:
        with transaction.atomic():
            updated = Round.objects.filter(pk=round_.pk, state=round_.state).update(
                state=RoundState.QUEUED, error="", finished_at=None, heartbeat_at=None,
                resent_at=timezone.now(),  # its message is sent now: the watchdog counts from here
            )
    except IntegrityError:
        raise RoundConflict("Another round is queued or running in this project") from None
    if updated:
        round_log(round_.pk, "retry queued: resuming at the first unfinished step")
        audit_record(action=AuditAction.ROUND_RETRIED, project=round_.project, target=f"round {round_.number}", actor=user, details={"round": round_.pk})
        send_after_commit(tasks.round_run, round_.pk)
    round_.refresh_from_db()
    return round_


@transaction.atomic
def round_cancel(*, round_: Round, user=None) -> Round:
    """Stop a queued or running round; a running step finishes, the next one does not start."""
    cancelled = Round.objects.filter(pk=round_.pk, state__in=ACTIVE_ROUND_STATES).update(
        state=RoundState.CANCELLED, finished_at=timezone.now()
    )
    if cancelled:
        audit_record(action=AuditAction.ROUND_CANCELLED, project=round_.project, target=f"round {round_.number}", actor=user, details={"round": round_.pk})
    round_.refresh_from_db()
    return round_


# --- execution ----------------------------------------------------------------------------------


def round_log(round_id: int, message: str) -> None:
    line = f"{timezone.now():%Y-%m-%d %H:%M:%S} {message}\n"
    with connection.cursor() as cursor:  # append without reading the whole log back
        cursor.execute(
            "UPDATE modeling_round SET log = log || %s, heartbeat_at = %s WHERE id = %s",
            [line, timezone.now(), round_id],
        )
    logger.info("round %s: %s", round_id, message)


class _Heartbeat:
    """Refreshes ``heartbeat_at`` from a thread while a long step runs in the main one."""

    def __init__(self, round_id: int):
        self.round_id, self.stop = round_id, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            while not self.stop.wait(HEARTBEAT_EVERY_S):
                Round.objects.filter(pk=self.round_id).update(heartbeat_at=timezone.now())
        finally:
            connection.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=5)


class _StepProgress:
    """Where a running step's progress reports go (modeling.ml.training.Progress): the report
    into ``Round.progress`` for the page and the API, its log line (the trainer's metrics) into
    the round's log. The ML code sends a report at most every couple of seconds."""

    def __init__(self, round_id: int, step: str):
        self.round_id, self.step = round_id, step

    def __call__(self, report: dict) -> None:
        report = dict(report)
        line = report.pop("log", None)
        if line:
            round_log(self.round_id, f"{self.step}: {line}")
        now = timezone.now()
        Round.objects.filter(pk=self.round_id).update(
            progress={"step": self.step, **report, "updated_at": now.isoformat()}, heartbeat_at=now
        )


def round_dir(round_: Round) -> Path:
    return Path(settings.ARTIFACTS_DIR) / round_.project.slug / f"round-{round_.number}"


OWNER_FILE = "round.json"


def _claim_round_dir(round_: Round) -> Path:
    """The round's folder, marked as this round's. Steps resume from files they find there (a
    retry must not train again), so a folder left by another round of the same project and
    number (a database restored or reset, ARTIFACTS_DIR kept) must not be read as this round's
    work: it is moved aside, not deleted, and the round starts clean."""
    workdir = round_dir(round_)
    owner = workdir / OWNER_FILE
    mine = {"round_id": round_.pk, "project": round_.project.slug, "number": round_.number,
            "created_at": round_.created_at.isoformat()}
    if workdir.exists():
        try:
            found = json.loads(owner.read_text())
        except (OSError, ValueError):
            found = None
        if found != mine:
            aside = workdir.with_name(f"{workdir.name}.stale-{timezone.now():%Y%m%d%H%M%S}")
            workdir.rename(aside)
            round_log(round_.pk, f"{workdir.name} held another round's files; moved aside to {aside.name}")
    workdir.mkdir(parents=True, exist_ok=True)
    owner.write_text(json.dumps(mine))
    return workdir


def _publish(tmp: Path, final: Path) -> None:
    """Rename a finished folder into place (atomic on one file system)."""
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


def _tmp_dir(final: Path) -> Path:
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def _base_member(project: Project, config: dict) -> CommitteeMember:
    member_id = config.get("base_member_id")
    query = CommitteeMember.objects.filter(kind=MemberKind.LOCAL)
    member = query.filter(pk=member_id).first() if member_id else query.filter(is_active=True).order_by("id").first()
    if member is None:
        raise RoundError("No local base model: register a local committee member (the demo registers SmolLM2)")
    return member


def _starting_policy(project: Project, config: dict) -> CommitteeMember:
    """The current best policy: the latest successful round's policy if it is active, else the base."""
    latest = (
        CommitteeMember.objects.filter(source_round__project=project, source_round__state=RoundState.SUCCEEDED, is_active=True)
        .order_by("-source_round__number")
        .first()
    )
    return latest or _base_member(project, config)


def _model_dir(member: CommitteeMember) -> str:
    from modeling.ml.generation import resolve_local_dir

    return str(resolve_local_dir(member_spec(member), Path(settings.ARTIFACTS_DIR) / "models"))


def snapshot_filters(*, round_number: int, previous_number: int | None, heldout_percent: int, dpo_strengths: list) -> dict:
    """The export filters of a round's three files: every judgment up to the round's cut (gold and
    imported ones included, both-bad ones not) split by prompt into training and held-out files,
    and for DPO the strong ones since the previous successful round. An export with the same
    filters is the same file, byte for byte."""
    common = {"round_to": round_number, "exclude_gold": False, "include_imported": True, "include_both_bad": False,
              "heldout_percent": heldout_percent}
    return {
        "rm": {**common, "split": "train"},
        "dpo": {**common, "split": "train", "round_from": previous_number, "strengths": list(dpo_strengths)},
        "heldout": {**common, "split": "heldout"},
    }


def _step_snapshot(round_: Round, workdir: Path) -> dict:
    """Freeze the training data: the round's cut (its last judgment) is set, then its three files
    are written by the export writer (annotation.services.exports.dataset_write), each recorded as a
    DatasetSnapshot of the round with the filters that reproduce it."""
    from annotation.exports import ExportFilters
    from annotation.services.exports import dataset_write

    project, config = round_.project, round_.config
    final = workdir / SNAPSHOT_DIR
    existing = {s.purpose: s for s in DatasetSnapshot.objects.filter(round=round_)}
    if final.exists() and len(existing) == 3:
        summary = json.loads((final / "summary.json").read_text())
        Round.objects.filter(pk=round_.pk).update(last_judgment_id=summary["last_judgment_id"])
        return summary
    previous = Round.objects.filter(project=project, state=RoundState.SUCCEEDED, number__lt=round_.number).order_by("-number").first()
    since_id = (previous.last_judgment_id if previous else 0) or 0
    last_id = Judgment.objects.filter(comparison__project=project).aggregate(n=Max("id"))["n"] or 0
    Round.objects.filter(pk=round_.pk).update(last_judgment_id=last_id)  # the cut the files' filters name
    percent = int(config["heldout_percent"])
    filters = snapshot_filters(round_number=round_.number, previous_number=previous.number if previous else None,
                               heldout_percent=percent, dpo_strengths=config["dpo_strengths"])
    tmp = _tmp_dir(final)
    summary = {"last_judgment_id": last_id, "dpo_since_judgment_id": since_id, "heldout_percent": percent, "files": {}}
    for name, part in filters.items():
        written = dataset_write(project=project, format="trl-preference", filters=ExportFilters.from_dict(part),
                                final=tmp / f"{name}.jsonl")
        summary["files"][name] = {"rows": written.stats.rows, "sha256": written.sha256, "bytes": written.size_bytes}
    if not summary["files"]["rm"]["rows"]:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RoundError("No judgments to train on outside the held-out split yet")
    (tmp / "summary.json").write_text(json.dumps(summary, indent=2))
    _publish(tmp, final)
    purposes = {"rm": SnapshotPurpose.REWARD_MODEL, "dpo": SnapshotPurpose.DPO, "heldout": SnapshotPurpose.EVALUATION}
    DatasetSnapshot.objects.filter(round=round_).delete()
    for name, info in summary["files"].items():
        DatasetSnapshot.objects.create(
            project=project, purpose=purposes[name], format="trl-preference", filters=ExportFilters.from_dict(filters[name]).as_dict(),
            row_count=info["rows"], sha256=info["sha256"], size_bytes=info["bytes"],
            path=str((final / f"{name}.jsonl").relative_to(settings.ARTIFACTS_DIR)), round=round_,
            created_by=round_.created_by,
        )
    return summary


def _train(kind: str, round_: Round, *, model_dir: str, rows: list[dict], heldout: list[dict], output_dir: Path, config,
           progress):
    """Train in this process, or under ``accelerate launch`` when the round asks for it."""
    from modeling.ml.training import RewardResult, train_dpo, train_reward_model

    launch = round_.config.get("accelerate")
    if not launch:
        train = train_reward_model if kind == "rm" else train_dpo
        key = "base_dir" if kind == "rm" else "policy_dir"
        return train(**{key: model_dir}, rows=rows, heldout=heldout, output_dir=str(output_dir), config=config, progress=progress)
    import subprocess
    import sys

    from modeling.ml.training import DPOResult

    jobdir = output_dir.with_name(output_dir.name + ".job")
    shutil.rmtree(jobdir, ignore_errors=True)
    jobdir.mkdir(parents=True)
    for name, data in (("rows", rows), ("heldout", heldout)):
        (jobdir / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    job = {
        "model_dir": model_dir, "rows": str(jobdir / "rows.jsonl"), "heldout": str(jobdir / "heldout.jsonl"),
        "output_dir": str(output_dir), "config": config.as_dict(),
    }
    (jobdir / "job.json").write_text(json.dumps(job))
    from modeling.ml.devices import cuda_available

    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(int(launch.get("num_processes", 1)))]
    if not cuda_available():
        command.append("--cpu")
    command += [*map(str, launch.get("args", [])), "-m", "modeling.ml.launch", kind, str(jobdir / "job.json")]
    round_log(round_.pk, f"{kind}: accelerate launch with {launch.get('num_processes', 1)} process(es)")
    # The launched processes cannot reach the database: the main one appends its progress reports
    # to a file (modeling/ml/launch.py), relayed here while it runs. stderr goes to a file too, so
    # a chatty trainer cannot fill a pipe nobody reads until the end.
    reports, errors = jobdir / "progress.jsonl", jobdir / "stderr.txt"
    with errors.open("wb") as stderr:
        process = subprocess.Popen(command, cwd=settings.BASE_DIR, stdout=subprocess.DEVNULL, stderr=stderr)
        relayed = 0
        while True:
            finished = process.poll() is not None
            relayed = _relay_reports(reports, relayed, progress)
            if finished:
                break
            time.sleep(1.0)
    if process.returncode != 0:
        raise RoundError(f"accelerate launch failed ({process.returncode}): {errors.read_text(errors='replace')[-1500:]}")
    result = json.loads((jobdir / "result.json").read_text())
    shutil.rmtree(jobdir, ignore_errors=True)
    return (RewardResult if kind == "rm" else DPOResult)(**result)


def _relay_reports(path: Path, seen: int, progress) -> int:
    """Pass on the complete report lines of ``path`` after the first ``seen``; returns the count."""
    if not path.exists():
        return seen
    lines = path.read_text(encoding="utf-8").split("\n")[:-1]  # the last piece may be half-written
    for line in lines[seen:]:
        progress(json.loads(line))
    return len(lines)


def _train_config(part: dict):
    from modeling.ml.training import TrainConfig

    return TrainConfig(**part)


def _step_reward_model(round_: Round, workdir: Path) -> dict:
    final = workdir / REWARD_MODEL_DIR
    if (final / "metrics.json").exists():
        return json.loads((final / "metrics.json").read_text())
    snapshot = workdir / SNAPSHOT_DIR
    rows, heldout = _read_jsonl(snapshot / "rm.jsonl"), _read_jsonl(snapshot / "heldout.jsonl")
    config = _train_config(round_.config["rm"])
    previous_rm = current_reward_model(project=round_.project)
    tmp = _tmp_dir(final)
    base = _base_member(round_.project, round_.config)
    progress = _StepProgress(round_.pk, RoundState.TRAINING_RM)
    result = _train("rm", round_, model_dir=_model_dir(base), rows=rows, heldout=heldout, output_dir=tmp, config=config, progress=progress)
    metrics = {
        "base_member": base.name, "train_pairs": result.train_pairs, "dropped_too_long": result.dropped_too_long,
        "max_length": result.max_length,
        "steps": result.steps, "seconds": result.seconds, "train_loss": result.train_loss, "heldout": result.heldout,
        "previous_heldout": _previous_heldout(previous_rm, heldout, result.max_length, progress),
        "config": config.as_dict(),
    }
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _publish(tmp, final)
    return metrics


def _previous_heldout(previous_rm: Path | None, heldout: list[dict], max_length: int, progress) -> dict | None:
    from modeling.ml.training import evaluate_reward_model

    if previous_rm is None:
        return None
    progress({"phase": "evaluating the previous reward model", "done": 0, "total": len(heldout), "unit": "pairs",
              "log": f"scoring the {len(heldout)} held-out pairs with the previous reward model, to compare"})
    return evaluate_reward_model(model_dir=str(previous_rm), rows=heldout, max_length=max_length)


def _step_dpo(round_: Round, workdir: Path) -> dict:
    final = workdir / POLICY_DIR
    if (final / "metrics.json").exists():
        return json.loads((final / "metrics.json").read_text())
    snapshot = workdir / SNAPSHOT_DIR
    rows = _read_jsonl(snapshot / "dpo.jsonl")
    strengths = set(round_.config["dpo_strengths"])
    heldout = [r for r in _read_jsonl(snapshot / "heldout.jsonl") if r["strength"] in strengths]
    start = _starting_policy(round_.project, round_.config)
    if not rows:
        return {"skipped": "no new pairs of the DPO strengths since the last successful round", "starting_member": start.name}
    config = _train_config(round_.config["dpo"])
    tmp = _tmp_dir(final)
    progress = _StepProgress(round_.pk, RoundState.TRAINING_DPO)
    result = _train("dpo", round_, model_dir=_model_dir(start), rows=rows, heldout=heldout, output_dir=tmp, config=config, progress=progress)
    metrics = {
        "starting_member": start.name, "starting_member_id": start.pk, "train_pairs": result.train_pairs,
        "dropped_too_long": result.dropped_too_long, "max_length": result.max_length, "steps": result.steps, "seconds": result.seconds, "train_loss": result.train_loss, "heldout": result.heldout,
        "config": config.as_dict(),
    }
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _publish(tmp, final)
    return metrics


def _step_evaluate(round_: Round, workdir: Path) -> dict:
    from modeling.ml.training import head_to_head

    dpo = round_.metrics.get(RoundState.TRAINING_DPO, {})
    if dpo.get("skipped"):
        return {"skipped": "no new policy this round"}
    heldout = _read_jsonl(workdir / SNAPSHOT_DIR / "heldout.jsonl")
    prompts, seen = [], set()
    for row in heldout:
        if row["prompt_hash"] not in seen:
            seen.add(row["prompt_hash"])
            prompts.append(row["prompt"])
    prompts = prompts[: int(round_.config["eval_prompts"])]
    start = CommitteeMember.objects.get(pk=dpo["starting_member_id"])
    return head_to_head(
        new_policy_dir=str(workdir / POLICY_DIR), old_policy_dir=_model_dir(start),
        reward_dir=str(workdir / REWARD_MODEL_DIR), prompts=prompts,
        max_new_tokens=int(round_.config["eval_max_new_tokens"]),
        cache_root=str(Path(settings.ARTIFACTS_DIR) / "models"),
        progress=_StepProgress(round_.pk, RoundState.EVALUATING),
    )


STEPS = (
    (RoundState.SNAPSHOT, _step_snapshot),
    (RoundState.TRAINING_RM, _step_reward_model),
    (RoundState.TRAINING_DPO, _step_dpo),
    (RoundState.EVALUATING, _step_evaluate),
)


def _register_policy(round_: Round, workdir: Path) -> CommitteeMember | None:
    dpo = round_.metrics.get(RoundState.TRAINING_DPO, {})
    if dpo.get("skipped"):
        return None
    existing = CommitteeMember.objects.filter(source_round=round_).first()
    if existing:
        return existing
    win_rate = round_.metrics.get(RoundState.EVALUATING, {}).get("win_rate")
    joins = round_.project.policy_admission == PolicyAdmission.ALWAYS or (win_rate is not None and win_rate > 0.5)
    return CommitteeMember.objects.create(
        name=f"{round_.project.slug}-round-{round_.number}",
        kind=MemberKind.CHECKPOINT,
        model_path=str((workdir / POLICY_DIR).resolve()),
        base_member_id=dpo["starting_member_id"],
        source_round=round_,
        is_active=joins,
        retired_at=None if joins else timezone.now(),
        description=f"DPO policy of round {round_.number} (win rate {win_rate}) from {dpo['starting_member']}.",
    )


def round_execute(*, round_id: int) -> Round:
    """Run a queued round's unfinished steps. Safe to call twice; a second caller while one runs,
    or a call on a finished round, changes nothing."""
    round_ = Round.objects.select_related("project").get(pk=round_id)
    first = next((state for state, _ in STEPS if state not in round_.step_timings), RoundState.EVALUATING)
    if not job_claim(Round, round_id, to_state=first):
        return round_
    workdir = _claim_round_dir(round_)
    try:
        with _Heartbeat(round_id):
            for state, step in STEPS:
                round_.refresh_from_db()
                if round_.state == RoundState.CANCELLED:
                    round_log(round_id, "cancelled; stopping before " + state)
                    return round_
                if state in round_.step_timings:
                    continue
                Round.objects.filter(pk=round_id).exclude(state=RoundState.CANCELLED).update(
                    state=state, progress={"step": state, "phase": "starting", "updated_at": timezone.now().isoformat()}
                )
                round_log(round_id, f"{state}: started")
                started = timezone.now()
                metrics = step(round_, workdir)
                seconds = round((timezone.now() - started).total_seconds(), 2)
                round_.metrics = {**round_.metrics, state: metrics}  # keyed by step: "snapshot", "training_rm", ...
                round_.step_timings = {**round_.step_timings, state: seconds}
                round_.artifacts_path = str(workdir.relative_to(settings.ARTIFACTS_DIR))
                round_.save(update_fields=["metrics", "step_timings", "artifacts_path"])
                round_log(round_id, f"{state}: done in {seconds} s")
            round_.refresh_from_db()
            if round_.state == RoundState.CANCELLED:
                return round_
            member = _register_policy(round_, workdir)
            (workdir / "metrics.json").write_text(json.dumps(round_.metrics, indent=2, default=str))
            Round.objects.filter(pk=round_id).exclude(state=RoundState.CANCELLED).update(
                state=RoundState.SUCCEEDED, finished_at=timezone.now(), progress={}
            )
            round_log(round_id, f"succeeded; new policy: {member.name + (' (active)' if member.is_active else ' (not admitted)') if member else 'none'}")
    except Exception as exc:
        logger.exception("round %s failed", round_id)
        Round.objects.filter(pk=round_id).update(
            state=RoundState.FAILED, error=f"{type(exc).__name__}: {exc}"[:4000], finished_at=timezone.now()
        )
        round_log(round_id, f"failed: {type(exc).__name__}: {exc}")
    round_.refresh_from_db()
    return round_


def rounds_start_due() -> list[int]:
    """Start a round in every project whose schedule is on and that gathered enough new judgments."""
    started = []
    for project in Project.objects.filter(round_schedule_enabled=True):
        if Round.objects.filter(project=project, state__in=ACTIVE_ROUND_STATES).exists():
            continue
        last = Round.objects.filter(project=project, state=RoundState.SUCCEEDED).order_by("-number").first()
        since = (last.last_judgment_id if last else 0) or 0
        new = Judgment.objects.filter(comparison__project=project, id__gt=since).count()
        if new >= project.round_min_new_judgments:
            try:
                started.append(round_start(project=project).pk)
            except RoundError:
                continue
    return started
