"""Weight averaging in a round (modeling/services/rounds/averaging.py): M reward models and their
soup, measured against each member; the new policy averaged with an earlier round's policy."""

from pathlib import Path

import pytest
from django.conf import settings

from modeling.models import RoundState
from modeling.services import RoundError, round_execute, round_start
from modeling.services.rounds.averaging import validation_split
from tests.modeling.test_rounds import SMALL, artifacts, labelled_project  # noqa: F401  (fixtures)


def rounds_page(project) -> str:
    from django.test import Client

    from annotation.models import Role
    from tests.factories import MembershipFactory

    client = Client()
    client.force_login(MembershipFactory(project=project, role=Role.ADMIN).user)
    return client.get(f"/p/{project.slug}/rounds/").content.decode()


def _run(project, config, capture):
    with capture():
        round_ = round_start(project=project, config=config)
    round_ = round_execute(round_id=round_.pk)
    assert round_.state == RoundState.SUCCEEDED, (round_.error, round_.log)
    return round_


@pytest.mark.django_db
def test_a_round_trains_m_reward_models_keeps_their_soup_and_reports_each(tiny_model_dir, artifacts, django_capture_on_commit_callbacks):
    project, _ = labelled_project(tiny_model_dir, n=24)
    config = {**SMALL, "averaging": {"rm_models": 3, "rm_soup": "greedy", "rm_validation_percent": 25}}
    round_ = _run(project, config, django_capture_on_commit_callbacks)
    rm = round_.metrics["training_rm"]
    soup = rm["averaging"]
    assert soup["models"] == 3 and soup["soup"] == "greedy" and soup["validation_pairs"] > 0
    assert [m["seed"] for m in soup["members"]] == [0, 1, 2]
    assert all(m["heldout_accuracy"] is not None and m["validation_accuracy"] is not None for m in soup["members"])
    assert 1 <= len(soup["chosen"]) <= 3 and soup["chosen"][0] == max(soup["members"], key=lambda m: m["validation_accuracy"])["name"]
    assert soup["soup_heldout_accuracy"] == rm["heldout"]["accuracy"]  # the round's RM is the soup
    assert soup["best_member_accuracy"] == max(m["heldout_accuracy"] for m in soup["members"])
    assert rm["train_pairs"] + soup["validation_pairs"] <= round_.metrics["snapshot"]["files"]["rm"]["rows"]
    assert "reward model 3 of 3" in round_.log and "greedy soup" in round_.log
    workdir = Path(settings.ARTIFACTS_DIR) / round_.artifacts_path
    assert (workdir / "reward_model" / "model.safetensors").exists() and not list(workdir.glob("*.members"))
    page = rounds_page(project)  # it says what the reward model is
    assert f"greedy soup of {len(soup['chosen'])}/3; single: best {soup['best_member_accuracy']}" in page


@pytest.mark.django_db
def test_the_next_round_can_average_its_policy_with_the_previous_one(tiny_model_dir, artifacts, django_capture_on_commit_callbacks):
    import torch
    from transformers import AutoModelForCausalLM

    project, base = labelled_project(tiny_model_dir, n=12)
    first = _run(project, SMALL, django_capture_on_commit_callbacks)
    assert "averaging" not in first.metrics["training_dpo"]  # off by default
    labelled_project(tiny_model_dir, n=12, project=project, base=base)  # new labels for round 2
    second = _run(project, {**SMALL, "averaging": {"policy_previous": 1}}, django_capture_on_commit_callbacks)
    averaged = second.metrics["training_dpo"]["averaging"]
    assert averaged["with"] == [first.policy_member.name] and averaged["models"] == 2
    assert f"averaging the new policy with {first.policy_member.name}" in second.log
    policy = Path(settings.ARTIFACTS_DIR) / second.artifacts_path / "policy"
    model = AutoModelForCausalLM.from_pretrained(policy)
    previous = dict(AutoModelForCausalLM.from_pretrained(first.policy_member.model_path).named_parameters())
    moved = [name for name, p in model.named_parameters() if not torch.equal(p, previous[name])]
    assert moved and (policy / "adapter").is_dir()  # a policy of its own, with this round's adapter beside it
    # the page shows the DPO policy's held-out margin and the RMs' accuracy per strength, the previous in brackets
    page = rounds_page(project)
    margin = second.metrics["training_dpo"]["heldout"]["rewards/margins"]
    assert f"margin {margin}" in page and "averaged with " + first.policy_member.name in page
    rm = second.metrics["training_rm"]
    strength, now = next(iter(rm["heldout"]["per_strength"].items()))
    before = rm["previous_heldout"]["per_strength"][strength]["accuracy"]
    assert f"{strength.removesuffix('_better')} {now['accuracy']} ({before})" in page


def test_the_validation_split_keeps_a_prompts_pairs_together():
    rows = [{"prompt_hash": f"p{i // 3}", "prompt": []} for i in range(300)]
    train, validation = validation_split(rows, 20)
    assert len(train) + len(validation) == 300 and 30 <= len(validation) <= 90
    assert not {r["prompt_hash"] for r in train} & {r["prompt_hash"] for r in validation}


@pytest.mark.django_db
@pytest.mark.parametrize("averaging, said", [
    ({"rm_models": 0}, "averaging.rm_models: expected a whole number from 1 to 16, got 0"),
    ({"rm_soup": "mean"}, "averaging.rm_soup: expected 'uniform' or 'greedy', got 'mean'"),
    ({"policy_previous": -1}, "averaging.policy_previous: expected a whole number from 0 to 16"),
    ({"models": 3}, r"averaging: unknown setting\(s\) \['models'\]"),
])
def test_bad_averaging_settings_are_refused_before_anything_runs(averaging, said):
    from tests.factories import ProjectFactory

    with pytest.raises(RoundError, match=said):
        round_start(project=ProjectFactory(), config={"averaging": averaging})


@pytest.mark.django_db
def test_a_round_on_imported_pairs_trains_them_without_a_margin_and_reports_them_apart(tiny_model_dir, artifacts, django_capture_on_commit_callbacks):
    import json

    from annotation.services.uploads import import_file
    from tests.annotation.test_hh_import import _hh_file

    project, _ = labelled_project(tiny_model_dir, n=0)
    import_file(project=project, file=_hh_file(16), name="hh.jsonl", format="hh")
    round_ = _run(project, SMALL, django_capture_on_commit_callbacks)
    files = round_.metrics["snapshot"]["files"]
    assert files["dpo"]["rows"] == files["rm"]["rows"] > 0  # unknown strength is kept for DPO by default
    assert list(round_.metrics["training_rm"]["heldout"]["per_strength"]) == ["unknown"]
    workdir = Path(settings.ARTIFACTS_DIR) / round_.artifacts_path
    rows = [json.loads(line) for line in (workdir / "snapshot" / "rm.jsonl").read_text().splitlines()]
    assert {(r["strength"], r["margin"]) for r in rows} == {(None, 0.0)}
