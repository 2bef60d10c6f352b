"""A round's steps: snapshot (the export writer, under ``snapshot_filters``), reward model, DPO
policy, head-to-head evaluation, and the registration of the new policy. Each step writes into a
temporary folder renamed into place last, so a half-written checkpoint is never read."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.db.models import Max
from django.utils import timezone

from annotation.models import UNKNOWN_STRENGTH, DatasetSnapshot, Judgment, PolicyAdmission, Project, SnapshotPurpose
from modeling.models import CommitteeMember, MemberKind, Round, RoundState
from modeling.selectors import REWARD_MODEL_DIR, current_reward_model
from modeling.services.members import member_spec
from modeling.services.rounds.averaging import policy_average, previous_policies, rm_ensemble
from modeling.services.rounds.evaluation import EVALUATION_DIR, evaluation_prompts, write_pairs
from modeling.services.rounds.settings import RoundError


logger = logging.getLogger(__name__)

POLICY_DIR = "policy"
SNAPSHOT_DIR = "snapshot"


def round_log(round_id: int, message: str) -> None:
    line = f"{timezone.now():%Y-%m-%d %H:%M:%S} {message}\n"
    with connection.cursor() as cursor:  # append without reading the whole log back
        cursor.execute(
            "UPDATE modeling_round SET log = log || %s, heartbeat_at = %s WHERE id = %s",
            [line, timezone.now(), round_id],
        )
    logger.info("round %s: %s", round_id, message)


class StepProgress:
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


def snapshot_filters(*, round_number: int, previous_number: int | None, heldout_percent: int, dpo_strengths: list,
                     include_evaluation: bool = False, aggregation: str = "each", reliability_fit: int | None = None) -> dict:
    """The export filters of a round's three files: every judgment up to the round's cut (gold and
    imported ones included, both-bad ones not; labels on earlier rounds' evaluation pairs only if
    the project lets them train) split by prompt into training and held-out files, and for DPO the
    strong ones since the previous successful round. An export with the same filters is the same
    file, byte for byte (a "reliability-weighted" one names its fit, ``reliability_fit``)."""
    common = {"round_to": round_number, "exclude_gold": False, "include_imported": True, "include_both_bad": False,
              "include_evaluation": include_evaluation, "heldout_percent": heldout_percent}
    weighing = {"aggregation": aggregation, **({"reliability_fit": reliability_fit} if reliability_fit else {})}
    return {
        "rm": {**common, "split": "train", **weighing},
        "dpo": {**common, "split": "train", "round_from": previous_number, "strengths": list(dpo_strengths), **weighing},
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
    aggregation = config.get("aggregation", "each")
    fit_id = _fit_reliability(project, round_) if aggregation == "reliability-weighted" else None
    filters = snapshot_filters(round_number=round_.number, previous_number=previous.number if previous else None,
                               heldout_percent=percent, dpo_strengths=config["dpo_strengths"],
                               include_evaluation=project.evaluation_trains, aggregation=aggregation, reliability_fit=fit_id)
    tmp = _tmp_dir(final)
    summary = {"last_judgment_id": last_id, "dpo_since_judgment_id": since_id, "heldout_percent": percent,
               "aggregation": aggregation, "files": {}}
    if fit_id:
        summary["reliability_fit"] = fit_id
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


def _fit_reliability(project, round_: Round) -> int:
    """A fresh fit of labeler reliability over the project's human judgments as they are now (past
    the round's cut too: later labels only sharpen each labeler's estimate), run here on the worker
    for the round's "reliability-weighted" files, which name it; returns its id."""
    from annotation.models import ReliabilityFit
    from annotation.services.reliability import reliability_fit_execute

    fit = ReliabilityFit.objects.create(project=project, created_by=round_.created_by)
    fit = reliability_fit_execute(fit_id=fit.pk)  # raises (and marks the fit failed) if it cannot fit
    round_log(round_.pk, f"snapshot: reliability fit #{fit.pk} over {fit.judgments} judgments")
    return fit.pk


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
    progress = StepProgress(round_.pk, RoundState.TRAINING_RM)
    averaging = round_.config.get("averaging") or {}
    soup = None

    def train_one(train_rows: list[dict], output_dir: Path, train_config):
        return _train("rm", round_, model_dir=_model_dir(base), rows=train_rows, heldout=heldout, output_dir=output_dir,
                      config=train_config, progress=progress)

    if int(averaging.get("rm_models", 1)) > 1:
        result, soup = rm_ensemble(train_one=train_one, rows=rows, heldout=heldout, output_dir=tmp, config=config,
                                   averaging=averaging, progress=progress)
    else:
        result = train_one(rows, tmp, config)
    metrics = {
        "base_member": base.name, "train_pairs": result.train_pairs, "dropped_too_long": result.dropped_too_long,
        "trimmed_turns": result.trimmed_turns, "max_length": result.max_length,
        "steps": result.steps, "seconds": result.seconds, "train_loss": result.train_loss, "heldout": result.heldout,
        "previous_heldout": _previous_heldout(previous_rm, heldout, result.max_length, progress),
        "config": config.as_dict(), **({"averaging": soup} if soup else {}),
    }
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _publish(tmp, final)
    return metrics


def _previous_heldout(previous_rm: Path | None, heldout: list[dict], max_length: int, progress) -> dict | None:
    from modeling.ml.evaluation import evaluate_reward_model

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
    heldout = [r for r in _read_jsonl(snapshot / "heldout.jsonl") if (r["strength"] or UNKNOWN_STRENGTH) in strengths]
    start = _starting_policy(round_.project, round_.config)
    if not rows:
        return {"skipped": "no new pairs of the DPO strengths since the last successful round", "starting_member": start.name}
    config = _train_config(round_.config["dpo"])
    tmp = _tmp_dir(final)
    progress = StepProgress(round_.pk, RoundState.TRAINING_DPO)
    result = _train("dpo", round_, model_dir=_model_dir(start), rows=rows, heldout=heldout, output_dir=tmp, config=config, progress=progress)
    metrics = {
        "starting_member": start.name, "starting_member_id": start.pk, "train_pairs": result.train_pairs,
        "dropped_too_long": result.dropped_too_long, "trimmed_turns": result.trimmed_turns, "max_length": result.max_length, "steps": result.steps, "seconds": result.seconds, "train_loss": result.train_loss, "heldout": result.heldout,
        "config": config.as_dict(),
    }
    previous = previous_policies(round_, start, int((round_.config.get("averaging") or {}).get("policy_previous", 0)))
    if previous:
        progress({"phase": "averaging policies", "done": 0, "total": len(previous) + 1, "unit": "models",
                  "log": f"averaging the new policy with {', '.join(m.name for m in previous)}"})
        metrics["averaging"] = policy_average(tmp, previous)
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _publish(tmp, final)
    return metrics


def _step_evaluate(round_: Round, workdir: Path) -> dict:
    """The new and the previous policy answer prompts neither trained on (evaluation_prompts);
    the round's reward model scores both answers. The answers are kept (evaluation/pairs.jsonl)
    for the labelers' evaluation pairs, made once the policy is registered."""
    from modeling.ml.evaluation import head_to_head

    dpo = round_.metrics.get(RoundState.TRAINING_DPO, {})
    if dpo.get("skipped"):
        return {"skipped": "no new policy this round"}
    final = workdir / EVALUATION_DIR
    if (final / "metrics.json").exists():
        return json.loads((final / "metrics.json").read_text())
    round_.refresh_from_db(fields=["last_judgment_id"])
    prompts = evaluation_prompts(round_=round_, count=int(round_.config["eval_prompts"]))
    start = CommitteeMember.objects.get(pk=dpo["starting_member_id"])
    result = head_to_head(
        new_policy_dir=str(workdir / POLICY_DIR), old_policy_dir=_model_dir(start),
        reward_dir=str(workdir / REWARD_MODEL_DIR), prompts=[p.messages for p in prompts],
        max_new_tokens=int(round_.config["eval_max_new_tokens"]),
        cache_root=str(Path(settings.ARTIFACTS_DIR) / "models"),
        progress=StepProgress(round_.pk, RoundState.EVALUATING),
    )
    tmp = _tmp_dir(final)
    write_pairs(tmp, prompts, result)
    metrics = {k: v for k, v in result.items() if k != "answers"}
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _publish(tmp, final)
    return metrics


STEPS = (
    (RoundState.SNAPSHOT, _step_snapshot),
    (RoundState.TRAINING_RM, _step_reward_model),
    (RoundState.TRAINING_DPO, _step_dpo),
    (RoundState.EVALUATING, _step_evaluate),
)


def register_policy(round_: Round, workdir: Path) -> CommitteeMember | None:
    dpo = round_.metrics.get(RoundState.TRAINING_DPO, {})
    if dpo.get("skipped"):
        return None
    existing = CommitteeMember.objects.filter(source_round=round_).first()
    if existing:
        return existing
    win_rate = round_.metrics.get(RoundState.EVALUATING, {}).get("win_rate")
    # if_humans_prefer: out until labelers' verdict on the evaluation pairs (evaluation.policies_admit).
    admission = round_.project.policy_admission
    joins = admission == PolicyAdmission.ALWAYS or (admission == PolicyAdmission.IF_WINS and win_rate is not None and win_rate > 0.5)
    return CommitteeMember.objects.create(
        name=f"{round_.project.slug}-round-{round_.number}",
        kind=MemberKind.CHECKPOINT,
        model_path=str((workdir / POLICY_DIR).resolve()),
        base_member_id=dpo["starting_member_id"],
        source_round=round_,
        is_active=joins,
        retired_at=None if joins else timezone.now(),
        description=f"DPO policy of round {round_.number} (reward-model win rate {win_rate}) from {dpo['starting_member']}."
        + (f" Joins once {round_.project.admission_min_labels} labels on its evaluation pairs prefer it." if admission == PolicyAdmission.IF_HUMANS_PREFER else ""),
    )
