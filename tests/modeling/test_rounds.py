"""Retraining rounds end to end on a tiny model, through the real task code on CPU."""

import json
import os
import signal
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from annotation.models import DatasetSnapshot, Judgment, Strength
from modeling.models import CommitteeMember, MemberKind, Round, RoundState
from modeling.services import (
    RoundError,
    round_cancel,
    round_execute,
    round_retry,
    round_start,
    rounds_start_due,
)
from modeling.tasks import round_run
from tests.factories import (
    ComparisonFactory,
    JudgmentFactory,
    MemberFactory,
    ProjectFactory,
    PromptFactory,
    ResponseFactory,
    UserFactory,
)
from annotation.services.exports import export_execute, export_start
from modeling.services.watchdog import jobs_watchdog
from tests.processes import database_url_for_workers, start_worker, stop, wait_until

SMALL = {
    "heldout_percent": 30,
    "eval_prompts": 4,
    "eval_max_new_tokens": 6,
    "rm": {"max_steps": 3, "batch_size": 2, "max_length": 128, "learning_rate": 1e-3},
    "dpo": {"max_steps": 3, "batch_size": 2, "max_length": 128, "learning_rate": 1e-3},
}
STRENGTHS = [Strength.SIGNIFICANTLY_BETTER, Strength.BETTER, Strength.SLIGHTLY_BETTER, Strength.NEGLIGIBLY_BETTER]


@pytest.fixture
def artifacts(settings, tmp_path):
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    return settings.ARTIFACTS_DIR


def labelled_project(tiny_model_dir, n=16, project=None, base=None):
    project = project or ProjectFactory()
    base = base or MemberFactory(name=f"tiny-base-{project.pk}", model_path=str(tiny_model_dir))
    labelers = [UserFactory() for _ in range(2)]
    # Numbered within the project, so the split by prompt hash (and with it each file's pairs and
    # step counts) is the same whichever tests ran before.
    offset = project.prompts.count()
    for i in range(n):
        prompt = PromptFactory(project=project, messages=[{"role": "user", "content": f"hello python list {offset + i}"}])
        comparison = ComparisonFactory(
            prompt=prompt,
            response_a=ResponseFactory(prompt=prompt, member=base, sample_index=0, text="yes good answer first step"),
            response_b=ResponseFactory(prompt=prompt, member=base, sample_index=1, text="no bad"),
        )
        JudgmentFactory(
            assignment__comparison=comparison, assignment__labeler=labelers[i % 2], strength=STRENGTHS[i % 4],
        )
    return project, base


def snapshot_of_labels():
    return sorted(Judgment.objects.values_list("id", "chosen_response_id", "rejected_response_id", "strength", "edited_response_id"))


@pytest.mark.django_db
def test_a_round_trains_evaluates_and_registers_a_policy_then_a_rerun_is_a_no_op(tiny_model_dir, artifacts, django_capture_on_commit_callbacks):
    project, base = labelled_project(tiny_model_dir)
    labels = snapshot_of_labels()
    with django_capture_on_commit_callbacks() as sent:
        round_ = round_start(project=project, config=SMALL)
    assert len(sent) == 1 and round_.state == RoundState.QUEUED and round_.number == 1

    result = round_run(json.loads(json.dumps(round_.pk)))
    round_.refresh_from_db()
    assert result["state"] == RoundState.SUCCEEDED, (round_.error, round_.log)
    assert set(round_.step_timings) == {"snapshot", "training_rm", "training_dpo", "evaluating"}  # jsonb: no order
    for line in ("snapshot: started", "training_rm: done", "evaluating: done", "succeeded; new policy"):
        assert line in round_.log

    workdir = Path(settings.ARTIFACTS_DIR) / round_.artifacts_path
    assert workdir == Path(settings.ARTIFACTS_DIR) / project.slug / "round-1"
    for path in ("reward_model/config.json", "reward_model/metrics.json", "policy/config.json", "policy/adapter",
                 "policy/tokenizer_config.json", "snapshot/rm.jsonl", "snapshot/dpo.jsonl", "snapshot/heldout.jsonl", "metrics.json"):
        assert (workdir / path).exists(), path
    assert not list(workdir.glob("*.tmp-*")) and not (workdir / "policy" / "trainer").exists()

    snapshots = {s.purpose: s for s in DatasetSnapshot.objects.filter(round=round_)}
    assert set(snapshots) == {"reward_model", "dpo", "evaluation"}
    import hashlib

    for snap in snapshots.values():
        data = (Path(settings.ARTIFACTS_DIR) / snap.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == snap.sha256 and data.count(b"\n") == snap.row_count
        # One dataset writer: a lead's export with the snapshot's filters is the same file.
        with django_capture_on_commit_callbacks():
            export = export_start(project=project, format=snap.format, filters=snap.filters)
        export = export_execute(snapshot_id=export.pk)
        assert (Path(settings.ARTIFACTS_DIR) / export.path).read_bytes() == data and export.sha256 == snap.sha256
    rm_rows = [json.loads(line) for line in (workdir / "snapshot/rm.jsonl").read_text().splitlines()]
    dpo_rows = [json.loads(line) for line in (workdir / "snapshot/dpo.jsonl").read_text().splitlines()]
    assert {r["strength"] for r in dpo_rows} <= {"significantly_better", "better"}
    assert {r["margin"] for r in rm_rows} <= {1.0, 2 / 3, 1 / 3, 0.0}
    assert snapshots["reward_model"].row_count + snapshots["evaluation"].row_count == 16

    rm = round_.metrics["training_rm"]
    assert rm["train_pairs"] == snapshots["reward_model"].row_count and rm["steps"] == 3
    assert 0 <= rm["heldout"]["accuracy"] <= 1 and rm["previous_heldout"] is None
    assert set(rm["heldout"]["per_strength"]) <= set(Strength.values)
    assert "rewards/accuracies" in round_.metrics["training_dpo"]["heldout"]
    evaluation = round_.metrics["evaluating"]
    assert 0 <= evaluation["win_rate"] <= 1 and evaluation["ci95"][0] <= evaluation["win_rate"] <= evaluation["ci95"][1]

    policy = CommitteeMember.objects.get(source_round=round_)
    assert policy.kind == MemberKind.CHECKPOINT and policy.is_active and policy.base_member == base
    assert Path(policy.model_path) == (workdir / "policy").resolve()
    assert snapshot_of_labels() == labels  # a round never touches labels

    timings = dict(round_.step_timings)
    again = round_run(round_.pk)
    round_.refresh_from_db()
    assert again["state"] == RoundState.SUCCEEDED and round_.step_timings == timings
    assert CommitteeMember.objects.filter(kind=MemberKind.CHECKPOINT).count() == 1


@pytest.mark.django_db
def test_a_round_reports_steps_loss_accuracy_and_eta_and_logs_the_trainer_not_stdout(
    tiny_model_dir, artifacts, django_capture_on_commit_callbacks, monkeypatch
):
    from modeling.ml import training
    from modeling.services import rounds

    monkeypatch.setattr(training, "REPORT_EVERY_S", 0.0)  # every step, so a 3-step run shows each
    reports, rows = [], []
    relay = rounds.StepProgress.__call__

    def spy(self, report):
        reports.append((self.step, dict(report)))
        relay(self, report)
        rows.append(Round.objects.values("state", "progress").get(pk=self.round_id))  # what the page reads

    monkeypatch.setattr(rounds.StepProgress, "__call__", spy)
    project, _ = labelled_project(tiny_model_dir)
    with django_capture_on_commit_callbacks():
        round_ = round_start(project=project, config=SMALL)
    round_ = round_execute(round_id=round_.pk)
    assert round_.state == RoundState.SUCCEEDED, (round_.error, round_.log)

    rm = [r for step, r in reports if step == "training_rm" and r["phase"] == "training"]
    assert [r["done"] for r in rm] == [0, 1, 1, 2, 2, 3, 3] and {r["total"] for r in rm} == {3}  # step ends and log lines
    assert rm[-1]["eta_s"] == 0 and all(r["elapsed_s"] >= 0 for r in rm)
    assert "loss" in rm[-1] and 0 <= rm[-1]["accuracy"] <= 1  # the RM's batch accuracy
    dpo = [r for step, r in reports if step == "training_dpo" and r["phase"] == "training"]
    # DPO's step count depends on how many strong pairs the prompt split left it (<= max_steps 3).
    steps = round_.metrics["training_dpo"]["steps"]
    assert 1 <= steps <= 3 and dpo[-1]["done"] == steps and "loss" in dpo[-1] and "accuracy" in dpo[-1]  # DPO: rewards/accuracies
    phases = [(step, r["phase"]) for step, r in reports]
    assert ("training_rm", "evaluating") in phases and ("training_dpo", "loading") in phases
    answering = [r for step, r in reports if step == "evaluating"]
    assert answering[-1]["done"] == answering[-1]["total"] == 2 * round_.metrics["evaluating"]["prompts"] and answering[-1]["unit"] == "answers"
    # the row the page polls says the same, and its state never lags the step it reports
    assert all(row["progress"]["step"] == row["state"] for row in rows)
    assert round_.progress == {}  # cleared when the round succeeded
    for line in ("training_rm: step 1/3: loss", "training_rm: step 3/3: loss", "training_rm: trained 3 steps",
                 f"training_dpo: step {steps}/{steps}: loss", "rewards/accuracies"):
        assert line in round_.log, line


@pytest.mark.django_db
def test_a_folder_left_by_another_round_is_moved_aside_not_resumed(tiny_model_dir, artifacts, django_capture_on_commit_callbacks):
    project, _ = labelled_project(tiny_model_dir)
    # What a database reset leaves behind: round-1 of the same project, finished, from another round.
    stale = Path(settings.ARTIFACTS_DIR) / project.slug / "round-1"
    for step in ("reward_model", "policy"):
        (stale / step).mkdir(parents=True)
        (stale / step / "metrics.json").write_text(json.dumps({"steps": 99, "starting_member_id": 999_999}))
    with django_capture_on_commit_callbacks():
        round_ = round_start(project=project, config=SMALL)
    round_ = round_execute(round_id=round_.pk)
    assert round_.state == RoundState.SUCCEEDED, (round_.error, round_.log)
    assert round_.metrics["training_rm"]["steps"] == 3 and round_.metrics["training_dpo"]["steps"] == 3  # trained, not read back
    assert "held another round's files; moved aside" in round_.log
    (aside,) = stale.parent.glob("round-1.stale-*")
    assert json.loads((aside / "policy" / "metrics.json").read_text())["steps"] == 99  # kept, not deleted
    assert json.loads((stale / "round.json").read_text())["round_id"] == round_.pk


@pytest.mark.django_db
def test_the_next_round_trains_dpo_only_on_new_judgments_from_the_new_policy(tiny_model_dir, artifacts, django_capture_on_commit_callbacks):
    project, base = labelled_project(tiny_model_dir)
    with django_capture_on_commit_callbacks():
        first = round_start(project=project, config=SMALL)
    round_execute(round_id=first.pk)
    with django_capture_on_commit_callbacks():
        second = round_start(project=project, config=SMALL)
    second = round_execute(round_id=second.pk)
    assert second.state == RoundState.SUCCEEDED, second.error
    assert second.metrics["training_dpo"]["skipped"].startswith("no new pairs")
    assert second.metrics["training_rm"]["previous_heldout"]["pairs"] > 0  # compared with round 1's RM
    assert not CommitteeMember.objects.filter(source_round=second).exists()

    labelled_project(tiny_model_dir, n=8, project=project, base=base)  # new labels arrive
    with django_capture_on_commit_callbacks():
        third = round_start(project=project, config=SMALL)
    third = round_execute(round_id=third.pk)
    assert third.state == RoundState.SUCCEEDED, third.error
    dpo = third.metrics["training_dpo"]
    assert dpo["starting_member"] == f"{project.slug}-round-1"  # from the current best policy
    first.refresh_from_db()
    first_ids = first.last_judgment_id  # the round's cut, a column
    assert first_ids == first.metrics["snapshot"]["last_judgment_id"] and third.last_judgment_id > first_ids
    dpo_rows = (Path(settings.ARTIFACTS_DIR) / third.artifacts_path / "snapshot/dpo.jsonl").read_text().splitlines()
    assert dpo_rows and all(json.loads(r)["judgment_id"] > first_ids for r in dpo_rows)


@pytest.mark.django_db
def test_a_failed_round_keeps_its_finished_steps_and_resumes_on_retry(tiny_model_dir, artifacts, django_capture_on_commit_callbacks):
    project, _ = labelled_project(tiny_model_dir)
    with django_capture_on_commit_callbacks():
        round_ = round_start(project=project, config={**SMALL, "rm": {**SMALL["rm"], "max_length": 4}})
    round_ = round_execute(round_id=round_.pk)
    assert round_.state == RoundState.FAILED and "no training pair fits in max_length=4" in round_.error
    assert list(round_.step_timings) == ["snapshot"]
    snapshot_timing = round_.step_timings["snapshot"]
    assert not (Path(settings.ARTIFACTS_DIR) / round_.artifacts_path / "reward_model").exists()  # nothing half-written

    Round.objects.filter(pk=round_.pk).update(config={**round_.config, "rm": SMALL["rm"]})
    round_.refresh_from_db()
    with django_capture_on_commit_callbacks() as sent:
        round_retry(round_=round_)
    assert len(sent) == 1
    round_ = round_execute(round_id=round_.pk)
    assert round_.state == RoundState.SUCCEEDED, round_.error
    assert round_.step_timings["snapshot"] == snapshot_timing and "retry queued" in round_.log


@pytest.mark.django_db
def test_only_one_round_per_project_runs_and_cancel_stops_it(tiny_model_dir, artifacts, django_capture_on_commit_callbacks):
    project, _ = labelled_project(tiny_model_dir, n=4)
    with django_capture_on_commit_callbacks():
        round_ = round_start(project=project, config=SMALL)
        with pytest.raises(RoundError, match="already queued or running"):
            round_start(project=project)
    round_cancel(round_=round_)
    assert round_execute(round_id=round_.pk).state == RoundState.CANCELLED
    with pytest.raises(RoundError, match=r"unknown setting\(s\) \['epochs'\]"):
        round_start(project=project, config={"epochs": 3})


@pytest.mark.django_db
def test_the_watchdog_fails_rounds_whose_heartbeat_stopped_and_resends_lost_ones(monkeypatch, django_capture_on_commit_callbacks):
    from modeling import tasks

    sent = []
    monkeypatch.setattr(tasks.round_run, "delay", lambda round_id: sent.append(round_id))
    now = timezone.now()
    stale = Round.objects.create(project=ProjectFactory(), number=1, state=RoundState.TRAINING_RM, heartbeat_at=now - timedelta(minutes=10))
    alive = Round.objects.create(project=ProjectFactory(), number=1, state=RoundState.TRAINING_DPO, heartbeat_at=now)
    lost = Round.objects.create(project=ProjectFactory(), number=1, state=RoundState.QUEUED)
    Round.objects.filter(pk=lost.pk).update(created_at=now - timedelta(minutes=30))
    with django_capture_on_commit_callbacks(execute=True):  # sent once committed (config.jobs)
        result = jobs_watchdog(now=now)["round"]
    assert result == {"failed_stale": [stale.pk], "resent": [lost.pk]} and sent == [lost.pk]
    stale.refresh_from_db(), alive.refresh_from_db()
    assert stale.state == RoundState.FAILED and "worker lost" in stale.error
    assert alive.state == RoundState.TRAINING_DPO
    assert jobs_watchdog(now=now)["round"] == {"failed_stale": [], "resent": []}  # a second tick changes nothing


@pytest.mark.django_db
def test_a_scheduled_round_starts_once_enough_new_judgments_arrived(tiny_model_dir, django_capture_on_commit_callbacks):
    project, _ = labelled_project(tiny_model_dir, n=3)
    project.round_schedule_enabled, project.round_min_new_judgments = True, 4
    project.save()
    with django_capture_on_commit_callbacks():
        assert rounds_start_due() == []
    labelled_project(tiny_model_dir, n=1, project=project, base=CommitteeMember.objects.get())
    with django_capture_on_commit_callbacks():
        started = rounds_start_due()
    assert started == [Round.objects.get(project=project).pk]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_step_leaves_the_round_failed_and_a_retry_finishes_it(tiny_model_dir, tmp_path, settings):
    project, _ = labelled_project(tiny_model_dir)
    slow = {**SMALL, "rm": {**SMALL["rm"], "max_steps": 20000}}
    worker = start_worker(
        queues="gpu", name="round-kill",
        env={"DATABASE_URL": database_url_for_workers(), "ARTIFACTS_DIR": str(tmp_path / "artifacts")},
        log_path=tmp_path / "worker.log",
    )
    try:
        round_ = round_start(project=project, config=slow)
        in_rm = wait_until(lambda: Round.objects.filter(pk=round_.pk, state=RoundState.TRAINING_RM).exists(), 180, 0.5)
        assert in_rm, (tmp_path / "worker.log").read_text()[-3000:]
        os.killpg(worker.pid, signal.SIGKILL)  # the worker dies mid-step, without a chance to clean up
        worker.wait()
    finally:
        stop(worker)
    round_.refresh_from_db()
    assert round_.state == RoundState.TRAINING_RM  # the row alone cannot know the worker is gone
    jobs_watchdog(now=round_.heartbeat_at + timedelta(minutes=6))
    round_.refresh_from_db()
    assert round_.state == RoundState.FAILED and "worker lost" in round_.error
    assert not (tmp_path / "artifacts" / round_.artifacts_path / "reward_model").exists()

    Round.objects.filter(pk=round_.pk).update(config={**round_.config, "rm": SMALL["rm"]})
    round_retry(round_=Round.objects.get(pk=round_.pk))
    # pytest-django's `settings` puts the value back afterwards; `del` on django.conf.settings
    # would remove ARTIFACTS_DIR for every test after this one.
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    round_ = round_execute(round_id=round_.pk)
    assert round_.state == RoundState.SUCCEEDED, round_.error
    assert set(round_.step_timings) == {"snapshot", "training_rm", "training_dpo", "evaluating"}  # jsonb: no order


@pytest.mark.slow
@pytest.mark.django_db
def test_a_round_can_train_under_accelerate_launch(tiny_model_dir, artifacts, django_capture_on_commit_callbacks):
    project, _ = labelled_project(tiny_model_dir)
    with django_capture_on_commit_callbacks():
        round_ = round_start(project=project, config={**SMALL, "accelerate": {"num_processes": 1}})
    round_ = round_execute(round_id=round_.pk)
    assert round_.state == RoundState.SUCCEEDED, (round_.error, round_.log)
    assert "rm: accelerate launch with 1 process(es)" in round_.log and "dpo: accelerate launch" in round_.log
    # the launched process cannot reach the database: its trainer log still reaches the round's log
    assert "training_rm: step 3/3: loss" in round_.log and "training_dpo: step 3/3: loss" in round_.log
    assert round_.metrics["training_rm"]["steps"] == 3 and round_.metrics["training_dpo"]["steps"] == 3
    workdir = Path(settings.ARTIFACTS_DIR) / round_.artifacts_path
    assert (workdir / "reward_model/config.json").exists() and not list(workdir.glob("*.job"))
    with pytest.raises(RoundError, match="accelerate.num_processes: expected a whole number from 1 up, got 0"):
        round_start(project=ProjectFactory(), config={"accelerate": {"num_processes": 0}})
