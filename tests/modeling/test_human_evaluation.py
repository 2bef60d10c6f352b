"""Humans judge a round's new policy (issue 14, item 3): a whole round on a tiny model puts blind
evaluation pairs in the labeling queue; labels on them move the round's human win rate and the
reward model's agreement with labelers; they stay out of the next snapshot unless the lead opts
in; the leaderboard rates the round's policy; and under "if_humans_prefer" labelers admit it."""

import json
from pathlib import Path

import pytest
from django.conf import settings

from annotation.models import AuditEvent, Comparison, ComparisonSource, PolicyAdmission, Role, Strength
from annotation.quality import project_leaderboard
from annotation.services import comparison_lease_next, judgment_submit
from annotation.services.labeling import Verdict
from modeling.models import CommitteeMember, EvaluationPair, RoundState
from modeling.selectors import human_evaluation
from annotation.selectors import pending_prompts
from modeling.services import round_start, sampling_execute, sampling_start
from modeling.services.rounds.evaluation import policies_admit
from modeling.tasks import round_run
from tests.factories import PromptFactory
from tests.modeling.test_rounds import SMALL, artifacts, labelled_project  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db

EVAL = {**SMALL, "eval_prompts": 6, "eval_max_new_tokens": 8}


def with_fresh_prompts(project, n=4):
    """Prompts nobody labelled yet: the first the evaluation takes (the held-out ones come next)."""
    for i in range(n):
        PromptFactory(project=project, messages=[{"role": "user", "content": f"a fresh question {project.pk}-{i}"}])
    return project


def run_round(project, capture, config=EVAL):
    with capture():
        round_ = round_start(project=project, config=config)
    assert round_run(round_.pk)["state"] == RoundState.SUCCEEDED, round_.log
    round_.refresh_from_db()
    return round_


def label_everything(project, labelers, pick):
    """Each labeler takes what the queue offers until it offers nothing; ``pick(pair, assignment)``
    says the strength and whether the new policy's answer wins on an evaluation pair. Returns the
    evaluation comparisons served, per labeler."""
    served = {labeler.pk: set() for labeler in labelers}
    for labeler in labelers:
        while (assignment := comparison_lease_next(project=project, labeler=labeler)) is not None:
            pair = EvaluationPair.objects.filter(comparison_id=assignment.comparison_id).first()
            chosen = "left"
            strength = Strength.BETTER
            if pair is not None:
                served[labeler.pk].add(assignment.comparison_id)
                new_wins, strength = pick(pair, labeler)
                new_on_left = assignment.left_response_id == pair.new_response_id
                chosen = "left" if new_wins == new_on_left else "right"
            judgment_submit(assignment_id=assignment.pk, labeler=labeler, verdict=Verdict(chosen=chosen, strength=strength))
    return served


def snapshot_comparisons(round_) -> set[int]:
    workdir = Path(settings.ARTIFACTS_DIR) / round_.artifacts_path / "snapshot"
    ids = set()
    for name in ("rm", "dpo", "heldout"):
        ids |= {json.loads(line)["comparison_id"] for line in (workdir / f"{name}.jsonl").read_text().splitlines()}
    return ids


def test_labelers_judge_the_new_policy_blind_and_their_labels_train_only_if_the_lead_opts_in(
    tiny_model_dir, artifacts, member_of, django_capture_on_commit_callbacks  # noqa: F811
):
    project, base = labelled_project(tiny_model_dir, n=16)
    with_fresh_prompts(project)
    project.overlap_k = 2
    project.save(update_fields=["overlap_k"])
    round_ = run_round(project, django_capture_on_commit_callbacks)
    policy = CommitteeMember.objects.get(source_round=round_)

    pairs = list(EvaluationPair.objects.filter(round=round_).select_related("comparison", "new_response", "previous_response"))
    evaluation = round_.metrics["evaluating"]
    assert round_.metrics["human_eval"]["pairs"] == len(pairs) >= 3, round_.metrics
    assert evaluation["prompts"] == 6 and "answers" not in evaluation  # the answers are a file, not metrics
    for pair in pairs:
        assert pair.comparison.source == ComparisonSource.EVALUATION and pair.comparison.project == project
        assert pair.new_response.member == policy and pair.previous_response.member == base
        assert {pair.comparison.response_a_id, pair.comparison.response_b_id} == {pair.new_response_id, pair.previous_response_id}
        assert pair.new_response.reward == pair.reward_new and pair.comparison.rendered  # rendered on the worker
        assert pair.new_response.engine == pair.previous_response.engine == "hf" and pair.new_response.timings["total_ms"] > 0
    # Prompts neither policy trained on: none of them is in the round's training files.
    workdir = Path(settings.ARTIFACTS_DIR) / round_.artifacts_path
    trained = {json.loads(line)["prompt_id"] for name in ("rm", "dpo") for line in (workdir / f"snapshot/{name}.jsonl").read_text().splitlines()}
    assert not trained & {p.comparison.prompt_id for p in pairs}
    fresh = set(project.prompts.filter(messages__0__content__startswith="a fresh").values_list("id", flat=True))
    asked = [json.loads(line)["prompt_id"] for line in (workdir / "evaluation/pairs.jsonl").read_text().splitlines()]
    assert len(asked) == 6 and set(asked[:4]) == fresh  # fresh prompts first, then held-out ones
    assert not set(asked) & trained
    assert human_evaluation(rounds=[round_])[round_.pk]["labels"] == 0

    # Served like any pair: two labelers each get every evaluation pair. The first prefers the new
    # policy on all but one pair ("better"), the second is unsure on every pair (counts half).
    first, second = member_of(project, Role.LABELER), member_of(project, Role.LABELER)
    loser = pairs[0].pk
    served = label_everything(
        project, [first, second],
        lambda pair, labeler: (pair.pk != loser, Strength.BETTER) if labeler == first else (True, Strength.NEGLIGIBLY_BETTER),
    )
    assert served[first.pk] == served[second.pk] == {p.comparison_id for p in pairs}

    human = human_evaluation(rounds=[round_])[round_.pk]
    n = len(pairs)
    assert human["labels"] == 2 * n and human["labelled_pairs"] == n
    assert human["win_rate"] == round(((n - 1) + 0.5 * n) / (2 * n), 4)
    assert human["ci95"][0] < human["win_rate"] < human["ci95"][1]
    rm_prefers_new = {p.pk: p.reward_new > p.reward_previous for p in pairs if p.reward_new != p.reward_previous}
    agree = sum((p != loser) == new for p, new in rm_prefers_new.items())  # only the first labeler picked sides
    assert human["rm_agreement_labels"] == len(rm_prefers_new)
    assert human["rm_agreement"] == (round(agree / len(rm_prefers_new), 4) if rm_prefers_new else None)
    rm_wins = sum(1.0 if p.reward_new > p.reward_previous else 0.5 if p.reward_new == p.reward_previous else 0.0 for p in pairs)
    assert human["rm_win_rate"] == round(rm_wins / n, 4)

    # The leaderboard rates the round's policy like any member, from these labels.
    names = {m["name"] for m in project_leaderboard(project=project, bootstrap_rounds=5)["members"]}
    assert {policy.name, base.name} <= names

    # An evaluation pair does not use up its prompt: the committee's next pass still answers it,
    # with answers of its own (evaluation answers are numbered apart, never taken for samples).
    assert all(p.new_response.sample_index >= 10_000 and p.previous_response.sample_index >= 10_000 for p in pairs)
    assert fresh <= set(pending_prompts(project=project).values_list("id", flat=True))
    with django_capture_on_commit_callbacks():
        run = sampling_start(project=project, max_new_tokens=6)
    assert sampling_execute(run_id=run.pk).state == "succeeded"
    committee = Comparison.objects.filter(project=project, prompt_id__in=fresh).exclude(source=ComparisonSource.EVALUATION)
    assert committee.exists() and not pending_prompts(project=project).filter(id__in=fresh).exists()
    evaluation_responses = {r for p in pairs for r in (p.new_response_id, p.previous_response_id)}
    assert not evaluation_responses & {r for pair in committee.values_list("response_a_id", "response_b_id") for r in pair}

    # The next round leaves the evaluation labels out; once the lead opts in, they are in.
    evaluation_ids = {p.comparison_id for p in pairs}
    second_round = run_round(project, django_capture_on_commit_callbacks, {**EVAL, "human_eval": False})
    assert not snapshot_comparisons(second_round) & evaluation_ids
    assert not EvaluationPair.objects.filter(round=second_round).exists() and second_round.metrics["human_eval"] == {"pairs": 0}
    project.evaluation_trains = True
    project.save(update_fields=["evaluation_trains"])
    third_round = run_round(project, django_capture_on_commit_callbacks, {**EVAL, "human_eval": False})
    assert snapshot_comparisons(third_round) >= evaluation_ids


def test_under_if_humans_prefer_a_policy_waits_for_the_minimum_of_labels_then_labelers_decide(
    tiny_model_dir, artifacts, member_of, django_capture_on_commit_callbacks  # noqa: F811
):
    project, _ = labelled_project(tiny_model_dir, n=16)
    with_fresh_prompts(project)
    project.policy_admission, project.admission_min_labels, project.overlap_k = PolicyAdmission.IF_HUMANS_PREFER, 4, 1
    project.save()
    round_ = run_round(project, django_capture_on_commit_callbacks)
    policy = CommitteeMember.objects.get(source_round=round_)
    assert not policy.is_active and "Joins once 4 labels" in policy.description
    pairs = list(EvaluationPair.objects.filter(round=round_))
    assert len(pairs) >= 4

    labeler = member_of(project, Role.LABELER)
    for i in range(3):  # three labels: not enough yet
        assignment = comparison_lease_next(project=project, labeler=labeler, exclude=())
        while not EvaluationPair.objects.filter(comparison_id=assignment.comparison_id).exists():
            judgment_submit(assignment_id=assignment.pk, labeler=labeler, verdict=Verdict(chosen="left", strength=Strength.BETTER))
            assignment = comparison_lease_next(project=project, labeler=labeler)
        pair = EvaluationPair.objects.get(comparison_id=assignment.comparison_id)
        chosen = "left" if assignment.left_response_id == pair.new_response_id else "right"
        judgment_submit(assignment_id=assignment.pk, labeler=labeler, verdict=Verdict(chosen=chosen, strength=Strength.BETTER))
    assert policies_admit() == []
    round_.refresh_from_db()
    assert "human_admission" not in round_.metrics

    label_everything(project, [labeler], lambda pair, _: (True, Strength.SIGNIFICANTLY_BETTER))
    decided = policies_admit()
    assert [d["round"] for d in decided] == [round_.pk] and decided[0]["joined"] and decided[0]["win_rate"] == 1.0
    policy.refresh_from_db()
    round_.refresh_from_db()
    assert policy.is_active and policy.retired_at is None and round_.metrics["human_admission"]["labels"] == len(pairs)
    assert AuditEvent.objects.filter(action="policy.decided", project=project).count() == 1
    assert policies_admit() == []  # decided once


def test_a_policy_labelers_do_not_prefer_stays_out(tiny_model_dir, artifacts, member_of, django_capture_on_commit_callbacks):  # noqa: F811
    project, _ = labelled_project(tiny_model_dir, n=16)
    with_fresh_prompts(project)
    project.policy_admission, project.admission_min_labels, project.overlap_k = PolicyAdmission.IF_HUMANS_PREFER, 3, 1
    project.save()
    round_ = run_round(project, django_capture_on_commit_callbacks)
    label_everything(project, [member_of(project, Role.LABELER)], lambda pair, _: (False, Strength.BETTER))
    [decision] = policies_admit()
    assert not decision["joined"] and decision["win_rate"] == 0.0
    policy = CommitteeMember.objects.get(source_round=round_)
    assert not policy.is_active and policy.retired_at is not None
    assert Comparison.objects.filter(source=ComparisonSource.EVALUATION, project=project).count() == decision["labels"]


def test_evaluation_labels_call_for_a_scheduled_round_only_if_they_train(django_capture_on_commit_callbacks):
    from modeling.models import Round
    from modeling.services import rounds_start_due
    from tests.factories import ComparisonFactory, JudgmentFactory, ProjectFactory

    project = ProjectFactory(round_schedule_enabled=True, round_min_new_judgments=3)
    for _ in range(3):
        JudgmentFactory(assignment__comparison=ComparisonFactory(prompt=PromptFactory(project=project), source=ComparisonSource.EVALUATION))
    with django_capture_on_commit_callbacks():
        assert rounds_start_due() == []
    project.evaluation_trains = True
    project.save(update_fields=["evaluation_trains"])
    with django_capture_on_commit_callbacks() as sent:
        started = rounds_start_due()
    assert len(started) == 1 and Round.objects.get(pk=started[0]).project == project and len(sent) == 1
