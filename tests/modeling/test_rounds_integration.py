"""One real round on the demo project: SmolLM2 (from its GGUF) trains an RM and a DPO policy on
a few dozen judgments, on CPU, through a real gpu-queue worker."""

import pytest

from annotation.demo import demo_load
from annotation.models import Role
from modeling.models import CommitteeMember, MemberKind, Round, RoundState
from modeling.services import round_start
from tests.factories import ComparisonFactory, JudgmentFactory, ResponseFactory, UserFactory
from tests.processes import database_url_for_workers, start_worker, stop, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

GOOD = "Here is a clear answer with the key facts, organised in short steps, and a brief summary at the end."
BAD = "I don't know."
STRENGTHS = ["significantly_better", "better", "slightly_better", "better"]


def test_a_real_smollm2_round_runs_on_a_worker_and_its_policy_joins_the_committee(tmp_path, settings):
    settings.ARBITER_DEMO_FIRST_PASS = 0  # the demo's own sampling pass would take the gpu worker first
    project = demo_load().project
    smol, smol_hot = CommitteeMember.objects.order_by("id")[:2]
    labelers = [UserFactory() for _ in range(3)]
    for user in labelers:
        project.memberships.create(user=user, role=Role.LABELER)
    for i, prompt in enumerate(project.prompts.order_by("id")[:32]):
        comparison = ComparisonFactory(
            prompt=prompt,
            response_a=ResponseFactory(prompt=prompt, member=smol, text=f"{GOOD} ({prompt.category})"),
            response_b=ResponseFactory(prompt=prompt, member=smol_hot, text=BAD),
        )
        JudgmentFactory(assignment__comparison=comparison, assignment__labeler=labelers[i % 3], strength=STRENGTHS[i % 4])

    config = {
        "heldout_percent": 20,
        "eval_prompts": 2,
        "eval_max_new_tokens": 12,
        "rm": {"max_steps": 2, "batch_size": 2, "max_length": 192, "learning_rate": 1e-4},
        "dpo": {"max_steps": 2, "batch_size": 2, "max_length": 192, "learning_rate": 1e-5},
    }
    worker = start_worker(queues="gpu", name="round-it", env={"DATABASE_URL": database_url_for_workers()}, log_path=tmp_path / "worker.log")
    try:
        round_ = round_start(project=project, config=config)
        finished = wait_until(
            lambda: Round.objects.filter(pk=round_.pk, state__in=[RoundState.SUCCEEDED, RoundState.FAILED]).exists(), 1200, 2
        )
    finally:
        stop(worker)
    round_.refresh_from_db()
    assert finished and round_.state == RoundState.SUCCEEDED, (round_.error, round_.log, (tmp_path / "worker.log").read_text()[-3000:])
    rm, dpo, evaluation = round_.metrics["training_rm"], round_.metrics["training_dpo"], round_.metrics["evaluating"]
    assert rm["base_member"] == smol.name and rm["steps"] == 2 and rm["heldout"]["pairs"] > 0
    assert dpo["starting_member"] == smol.name and dpo["steps"] == 2
    assert evaluation["prompts"] == 2 and 0 <= evaluation["win_rate"] <= 1
    policy = CommitteeMember.objects.get(source_round=round_)
    assert policy.kind == MemberKind.CHECKPOINT and policy.is_active  # joins the committee
