"""Rounds sized to the data: epochs with a cap on steps, presets (quick / standard) and custom
settings on top, every bad value refused before anything is queued."""

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from annotation.models import Role
from modeling.ml.training import TrainConfig, train_steps
from modeling.models import Round
from modeling.services import RoundError, round_start
from tests.factories import ProjectFactory


def test_steps_scale_with_the_pairs_and_stop_at_the_cap():
    one_epoch = TrainConfig(epochs=1, max_steps=500, batch_size=4)
    assert [train_steps(one_epoch, n) for n in (1, 50, 2_000, 50_000)] == [1, 13, 500, 500]
    assert train_steps(TrainConfig(epochs=2, max_steps=500, batch_size=2), 48) == 48
    assert train_steps(TrainConfig(max_steps=7), 50_000) == 7  # no epochs: exactly max_steps, as before


@pytest.mark.django_db
def test_the_quick_preset_is_small_and_settings_apply_on_top(django_capture_on_commit_callbacks):
    project = ProjectFactory()
    with django_capture_on_commit_callbacks():
        quick = round_start(project=project, preset="quick", config={"dpo": {"beta": 0.2}})
    assert quick.config["preset"] == "quick"
    assert quick.config["rm"]["max_steps"] == 40 and quick.config["rm"]["epochs"] == 1 and quick.config["eval_prompts"] == 4
    assert quick.config["dpo"]["max_steps"] == 30 and quick.config["dpo"]["beta"] == 0.2
    # the rest comes from the standard settings
    assert quick.config["rm"]["learning_rate"] == 3e-5 and quick.config["rm"]["lora"] is False


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"preset": "huge"}, "preset: expected one of quick, standard"),
        ({"config": {"rm": {"batch_size": 0}}}, "rm.batch_size: expected a whole number above 0, got 0"),
        ({"config": {"dpo": {"epochs": -1.0}}}, "dpo.epochs: expected a number above 0 or null, got -1.0"),
        ({"config": {"rm": {"max_steps": "ten"}}}, "rm.max_steps: expected a whole number above 0, got 'ten'"),
        ({"config": {"preset": "quick"}}, r"unknown setting\(s\) \['preset'\]"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_queued(kwargs, message):
    with pytest.raises(RoundError, match=message):
        round_start(project=ProjectFactory(), **kwargs)
    assert not Round.objects.exists()


@pytest.mark.django_db
def test_the_api_takes_a_preset(member_of, django_capture_on_commit_callbacks):
    project = ProjectFactory()
    client = APIClient()
    client.force_authenticate(member_of(project, Role.ADMIN))
    url = reverse("api-rounds", kwargs={"slug": project.slug})
    with django_capture_on_commit_callbacks():
        answer = client.post(url, {"preset": "quick", "config": {"rm": {"max_steps": 20}}}, format="json")
    assert answer.status_code == 202 and answer.json()["config"]["preset"] == "quick"
    assert answer.json()["config"]["rm"]["max_steps"] == 20
    assert client.post(url, {"preset": "huge"}, format="json").status_code == 400


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("form", "said"),
    [
        ({"preset": "custom", "config": "{not json"}, "No round started: the custom settings are not JSON"),
        ({"preset": "custom", "config": "[1, 2]"}, "must be a JSON object"),
        ({"preset": "custom", "config": '{"rm": {"max_steps": 0}}'}, "rm.max_steps: expected a whole number above 0"),
        ({"preset": "custom", "config": '{"rm": {"learning_rate": NaN}}'}, "not JSON"),
        ({"preset": "custom", "config": "[" * 5000 + "]" * 5000}, "not JSON"),
        ({"preset": "custom", "config": '{"eval_prompts": 2, "x": "' + "a" * 20_000 + '"}'}, "longer than 10,000 characters"),
        ({"preset": "gigantic"}, "preset: expected one of"),
    ],
)
def test_the_page_refuses_bad_settings_with_a_message(client, member_of, form, said):
    project = ProjectFactory()
    client.force_login(member_of(project, Role.ADMIN))
    page = client.post(reverse("round-start", kwargs={"slug": project.slug}), form, follow=True)
    assert page.status_code == 200 and said in page.content.decode()
    assert not Round.objects.exists()


@pytest.mark.django_db
def test_the_page_starts_quick_by_default_and_custom_on_standard(client, member_of, django_capture_on_commit_callbacks):
    project = ProjectFactory()
    client.force_login(member_of(project, Role.ADMIN))
    url = reverse("round-start", kwargs={"slug": project.slug})
    with django_capture_on_commit_callbacks():
        page = client.post(url, {}, follow=True)
    assert "Round 1 (quick) queued" in page.content.decode()
    Round.objects.all().delete()
    with django_capture_on_commit_callbacks():
        client.post(url, {"preset": "custom", "config": '{"rm": {"epochs": 2}}'})
    custom = Round.objects.get()
    assert custom.config["preset"] == "standard" and custom.config["rm"]["epochs"] == 2 and custom.config["rm"]["max_steps"] == 500


@pytest.mark.django_db
def test_the_page_sets_the_labels_a_round_trains_on_and_refuses_an_unknown_one(client, member_of, django_capture_on_commit_callbacks):
    project = ProjectFactory()
    client.force_login(member_of(project, Role.ADMIN))
    url = reverse("round-start", kwargs={"slug": project.slug})
    with django_capture_on_commit_callbacks():
        page = client.post(url, {"preset": "quick", "aggregation": "reliability-weighted"}, follow=True)
    assert Round.objects.get().config["aggregation"] == "reliability-weighted"
    assert "Round 1 (quick, reliability-weighted labels) queued" in page.content.decode()
    Round.objects.all().delete()
    page = client.post(url, {"preset": "quick", "aggregation": "loudest"}, follow=True)
    assert "No round started: aggregation" in page.content.decode() and not Round.objects.exists()
