"""Labeler reliability: the model (annotation/reliability.py) on hand-checkable cases, its tests,
the fit task, the reliability-weighted export, the pages and the round setting."""

import json
import math
import random

import pytest

from annotation import reliability
from annotation.reliability import Label, LabelerParams, ProfileRow, comparison_posterior, fit, labeler_profiles


# --- the statistics, against values computed by hand -------------------------------------------------


def test_the_tests_match_hand_computed_values():
    # 7 of 10 against 1/2: P(X <= 3 or X >= 7) = 2 * (1 + 10 + 45 + 120) / 1024
    assert reliability.binomial_p(7, 10) == pytest.approx(2 * 176 / 1024)
    assert reliability.binomial_p(5, 10) == pytest.approx(1.0)
    assert reliability.binomial_p(0, 0) == 1.0
    # chi-square's 95% points: 3.841 (df 1), 7.815 (df 3); df 2 is exp(-x/2) exactly
    assert reliability.chi2_sf(3.841, 1) == pytest.approx(0.05, abs=1e-4)
    assert reliability.chi2_sf(7.815, 3) == pytest.approx(0.05, abs=1e-4)
    assert reliability.chi2_sf(30.0, 3) == pytest.approx(1.3800570312932e-06, rel=1e-6)
    assert reliability.chi2_sf(4.0, 2) == pytest.approx(math.exp(-2))
    low, high = reliability.wilson_interval(5, 10)
    assert (round(low, 4), round(high, 4)) == (0.2366, 0.7634)
    # two proportions 30/50 vs 20/50: pooled 0.5, z = 0.2 / sqrt(0.25 * 0.04) = 2
    assert reliability.two_proportion_p(30, 50, 20, 50) == pytest.approx(math.erfc(2 / math.sqrt(2)))
    stat, p, df = reliability.chi2_goodness_p({"a": 10, "b": 30}, {"a": 0.5, "b": 0.5})
    assert (stat, df) == (10.0, 1) and p == pytest.approx(reliability.chi2_sf(10.0, 1))


# --- the posterior of one comparison --------------------------------------------------------------------


def _by_hand(labels):
    """P(theta > 0 | labels) by brute numerical integration over theta ~ N(0, 2^2)."""
    def density(t):
        value = math.exp(-t * t / 8)
        for alpha, beta, chose_a, a_left in labels:
            z = alpha * t + beta * (1 if a_left else -1)
            value *= 1 / (1 + math.exp(-z if chose_a else z))
        return value
    ts = [-8 + 16 * i / 20000 for i in range(20001)]
    total = sum(density(t) for t in ts)
    return sum(density(t) for t in ts if t > 0) / total


@pytest.mark.parametrize("labels", [
    [(1.0, 0.0, True, True)],
    [(1.0, 0.0, True, True), (1.0, 0.0, True, False), (1.0, 0.0, False, True)],
    [(2.0, 0.0, False, True), (0.2, 0.0, True, True), (0.2, 0.0, True, False)],
    [(1.0, 1.5, True, True), (1.0, 0.0, False, False)],
])
def test_a_comparisons_posterior_matches_numerical_integration(labels):
    assert comparison_posterior(labels) == pytest.approx(_by_hand(labels), abs=0.01)


def test_the_posterior_weighs_labelers_by_reliability_and_discounts_a_left_pull():
    assert comparison_posterior([]) == 0.5
    assert comparison_posterior([(0.0, 0.0, True, True)]) == pytest.approx(0.5)  # a random clicker says nothing
    one = comparison_posterior([(1.0, 0.0, True, True)])
    assert comparison_posterior([(1.0, 0.0, False, True)]) == pytest.approx(1 - one)  # symmetric
    # two unreliable labelers for A, one reliable for B: B wins (a majority would say A)
    assert comparison_posterior([(0.2, 0, True, True), (0.2, 0, True, False), (2.5, 0, False, True)]) < 0.5
    # a pick of the left side by a labeler who leans left says less than the same pick by one who does not
    assert 0.5 < comparison_posterior([(1.0, 1.5, True, True)]) < one


# --- the fit ---------------------------------------------------------------------------------------------


def _simulate(seed, *, comparisons=300, labelers=20, overlap=3):
    """Bradley-Terry truth; labelers 0-2 pick left 80% on near-ties, 3-4 click at random."""
    rng = random.Random(seed)
    theta = [rng.gauss(0, 1.5) for _ in range(comparisons)]
    scale = [0.6 + 3.4 * i / (labelers - 1) for i in range(labelers)]
    labels = []
    for c in range(comparisons):
        for w in rng.sample(range(labelers), overlap):
            a_left = rng.random() < 0.5
            if w in (3, 4):
                chose_a = (rng.random() < 0.5) == a_left
            elif w < 3 and abs(theta[c]) < 0.5:
                chose_a = (rng.random() < 0.8) == a_left
            else:
                chose_a = rng.random() < 1 / (1 + math.exp(-scale[w] * theta[c]))
            labels.append(Label(c, f"w{w}", chose_a, a_left))
    return theta, labels


def test_the_fit_beats_majority_vote_and_finds_random_clickers_on_a_known_truth():
    majority_hits = weighted_hits = 0
    reliability_of, left_of = {}, {}
    for seed in range(3):
        theta, labels = _simulate(seed, comparisons=600)
        result = fit(labels)
        assert result.converged
        for c, t in enumerate(theta):
            votes = sum(1 if label.chose_a else -1 for label in labels if label.comparison == c)
            majority_hits += (votes > 0) == (t > 0)
            weighted_hits += (result.posterior_a[c] > 0.5) == (t > 0)
        for name, params in result.labelers.items():
            reliability_of.setdefault(name, []).append(params.reliability)
            left_of.setdefault(name, []).append(params.left_on_tie)
    assert weighted_hits > majority_hits
    mean = {name: sum(v) / len(v) for name, v in reliability_of.items()}
    left = {name: sum(v) / len(v) for name, v in left_of.items()}
    biased, normal = [left[f"w{w}"] for w in range(3)], [left[f"w{w}"] for w in range(5, 20)]
    assert sum(biased) / 3 > sum(normal) / 15 + 0.05 and abs(sum(normal) / 15 - 0.5) < 0.05
    assert sorted(mean, key=mean.get)[:2] == sorted(["w3", "w4"], key=mean.get)
    # the most careful labeler is worth more than the least careful normal one
    assert mean["w19"] > mean["w5"]


def test_the_fits_posteriors_are_the_plain_python_posterior_with_its_parameters():
    _, labels = _simulate(7, comparisons=60)
    result = fit(labels)
    for c in range(10):
        rows = [(result.labelers[l.labeler].reliability, result.labelers[l.labeler].bias, l.chose_a, l.a_left)
                for l in labels if l.comparison == c]
        assert result.posterior_a[c] == pytest.approx(comparison_posterior(rows), abs=1e-9)


def test_an_empty_fit_and_blocks_smaller_than_the_labels_give_the_same_answer(monkeypatch):
    assert fit([]).labelers == {}
    _, labels = _simulate(3, comparisons=40)
    whole = fit(labels)
    monkeypatch.setattr(reliability, "BLOCK", 7)
    blocked = fit(labels)
    assert blocked.posterior_a == pytest.approx(whole.posterior_a)
    assert {k: v.reliability for k, v in blocked.labelers.items()} == pytest.approx({k: v.reliability for k, v in whole.labelers.items()})


# --- the profile -------------------------------------------------------------------------------------


def _rows_for_profile():
    """12 comparisons labelled by ann, bo and cy, who agree on A; lefty always picks the left side."""
    rows = []
    for c in range(12):
        a_left = c % 2 == 0
        for name in ("ann", "bo", "cy"):
            rows.append(ProfileRow(c, name, True, a_left, "better", 10.0, a_longer=True))
        rows.append(ProfileRow(c, "lefty", a_left, a_left, "significantly_better", 2.0, a_longer=True))  # the left side, always
    return rows


def test_the_profile_flags_with_the_test_that_flagged_and_reads_consensus_without_the_labeler():
    rows = _rows_for_profile()
    result = fit([Label(r.comparison, r.labeler, r.chose_a, r.a_left) for r in rows])
    profiles, summary = labeler_profiles(rows, result, {"ann": (4, 0), "lefty": (4, 3)}, strengths=("better", "significantly_better"))
    lefty, ann = profiles["lefty"], profiles["ann"]
    assert lefty["left"]["k"] == 12 and lefty["left"]["p"] == pytest.approx(2 / 4096)
    assert lefty["agreement"]["n"] == 12 and lefty["agreement"]["k"] == 6  # with ann, bo and cy on A, half the time
    assert ann["agreement"]["k"] == 12 and ann["agreement"]["others_rate"] == pytest.approx((12 + 12 + 6) / 36, abs=1e-4)
    assert profiles["lefty"]["reliability"] < profiles["ann"]["reliability"]
    assert {f["name"] for f in lefty["flags"]} >= {"position bias", "use of strengths"}
    for flag in lefty["flags"]:
        assert flag["p"] < summary["flag_level"] and flag["test"] and flag["figure"]
    assert ann["flags"] == []
    assert lefty["flips"]["k"] == 3 and lefty["flips"]["n"] == 4 and lefty["flips"]["others_rate"] == 0.0
    assert ann["length"]["labeler_longer_rate"] == 1.0 and ann["length"]["consensus_longer_rate"] == 1.0
    assert summary["labelers"] == 4 and summary["flag_level"] == pytest.approx(0.05 / 4)
    assert LabelerParams(bias=0.0).left_on_tie == 0.5


# --- the job, the export, the pages, the API and the round setting (database) ------------------------


@pytest.fixture
def labelled(db):
    """14 comparisons: ann, bo and cy pick A whichever side it is on; lefty always picks the left side."""
    from tests.factories import ComparisonFactory, JudgmentFactory, ProjectFactory, PromptFactory, UserFactory

    project = ProjectFactory()
    users = {name: UserFactory(username=name) for name in ("ann", "bo", "cy", "lefty")}
    comparisons = []
    for i in range(14):
        c = ComparisonFactory(prompt=PromptFactory(project=project), response_a__text="a longer answer " * 3, response_b__text="short")
        comparisons.append(c)
        left = c.response_a if i % 2 == 0 else c.response_b
        for name in ("ann", "bo", "cy", "lefty"):
            chosen = left if name == "lefty" else c.response_a
            other = c.response_b if chosen == c.response_a else c.response_a
            JudgmentFactory(assignment__comparison=c, assignment__labeler=users[name], chosen_response=chosen,
                            rejected_response=other, left_response=left, strength="significantly_better" if name == "lefty" else "better")
    return project, comparisons


def _fitted(project, django_capture_on_commit_callbacks):
    from annotation.services.reliability import reliability_fit_execute, reliability_fit_start

    with django_capture_on_commit_callbacks() as callbacks:
        queued = reliability_fit_start(project=project)
    assert len(callbacks) == 1 and queued.state == "queued"
    return reliability_fit_execute(fit_id=queued.pk)


def test_the_fit_job_stores_each_labelers_parameters_profile_flags_and_when(labelled, django_capture_on_commit_callbacks):
    from annotation.models import Judgment

    project, _ = labelled
    fit_row = _fitted(project, django_capture_on_commit_callbacks)
    assert fit_row.state == "succeeded" and fit_row.finished_at and fit_row.judgments == 56
    assert fit_row.last_judgment_id == Judgment.objects.latest("id").pk
    assert set(fit_row.labelers) == {"ann", "bo", "cy", "lefty"}
    assert fit_row.labelers["lefty"]["reliability"] < fit_row.labelers["ann"]["reliability"]
    lefty = fit_row.profiles["lefty"]
    assert lefty["left"]["k"] == 14 and "position bias" in {f["name"] for f in lefty["flags"]}
    assert fit_row.profiles["ann"]["flags"] == [] and fit_row.profiles["ann"]["length"]["labeler_longer_rate"] == 1.0
    assert fit_row.summary["converged"] and fit_row.summary["labelers"] == 4
    # a second delivery of the message finds it claimed and changes nothing
    from annotation.services.reliability import reliability_fit_execute

    assert reliability_fit_execute(fit_id=fit_row.pk).finished_at == fit_row.finished_at


def test_a_fit_is_queued_once_and_again_only_when_judgments_arrived(labelled, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from annotation.models import ReliabilityFit
    from annotation.services.reliability import reliability_fit_refresh, reliability_fit_start

    project, comparisons = labelled
    with django_capture_on_commit_callbacks():
        _, first = reliability_fit_refresh(project=project)
        assert reliability_fit_start(project=project) == first  # already queued: the same job
    from annotation.services.reliability import reliability_fit_execute

    reliability_fit_execute(fit_id=first.pk)
    assert reliability_fit_refresh(project=project)[1] is None  # nothing new since
    from tests.factories import JudgmentFactory, UserFactory

    c = comparisons[0]
    JudgmentFactory(assignment__comparison=c, assignment__labeler=UserFactory(username="dee"), chosen_response=c.response_a,
                    rejected_response=c.response_b, left_response=c.response_a)
    assert reliability_fit_refresh(project=project)[1] is None  # asked less than a minute ago
    ReliabilityFit.objects.filter(pk=first.pk).update(created_at=first.created_at - timedelta(minutes=2))
    with django_capture_on_commit_callbacks() as callbacks:
        _, second = reliability_fit_refresh(project=project)
    assert second.pk != first.pk and len(callbacks) == 1


def _weighted_fixture():
    """One comparison: x and y (near-random) pick A, z (reliable) picks B."""
    from annotation.models import JobState, ReliabilityFit
    from tests.factories import ComparisonFactory, JudgmentFactory, ProjectFactory, PromptFactory, UserFactory

    project = ProjectFactory()
    c = ComparisonFactory(prompt=PromptFactory(project=project))
    for name, chosen in (("x", c.response_a), ("y", c.response_a), ("z", c.response_b)):
        other = c.response_b if chosen == c.response_a else c.response_a
        JudgmentFactory(assignment__comparison=c, assignment__labeler=UserFactory(username=name), chosen_response=chosen,
                        rejected_response=other, left_response=c.response_a, strength="better")
    params = {"x": 0.05, "y": 0.05, "z": 2.5}
    fit_row = ReliabilityFit.objects.create(project=project, state=JobState.SUCCEEDED, labelers={
        name: {"reliability": a, "bias": 0.0, "left_on_tie": 0.5, "labels": 1} for name, a in params.items()})
    return project, c, fit_row


@pytest.mark.django_db
def test_the_reliability_weighted_export_follows_the_reliable_labeler_where_majority_does_not():
    from annotation.exports import ExportFilters, export_rows

    project, c, _ = _weighted_fixture()

    def rows(aggregation):
        return list(export_rows(project=project, format="trl-preference", filters=ExportFilters.from_dict({"aggregation": aggregation})))

    (majority,) = rows("majority")
    (weighted,) = rows("reliability-weighted")
    assert majority["chosen_response_id"] == c.response_a_id and "confidence" not in majority
    expected = 1 - comparison_posterior([(0.05, 0, True, True), (0.05, 0, True, True), (2.5, 0, False, True)])
    assert weighted["chosen_response_id"] == c.response_b_id and weighted["confidence"] == pytest.approx(expected, abs=1e-4)
    assert weighted["confidence"] > 0.5 and weighted["labels"] == 3 and weighted["labeler"] == "x,y,z"
    assert weighted["agreement"] == pytest.approx(1 / 3, abs=1e-3)
    text = list(export_rows(project=project, format="trl-preference-text", filters=ExportFilters.from_dict({"aggregation": "reliability-weighted"})))
    assert text[0]["chosen"] == weighted["chosen"][0]["content"]


@pytest.mark.django_db
def test_without_a_fit_the_weighted_export_is_refused_with_how_to_get_one(member_of, django_capture_on_commit_callbacks):
    from rest_framework.test import APIClient

    from annotation.exports import ExportError, ExportFilters, export_rows
    from annotation.models import DatasetSnapshot, Role
    from tests.factories import ProjectFactory

    project = ProjectFactory()
    with pytest.raises(ExportError, match="quality page"):
        list(export_rows(project=project, format="trl-preference", filters=ExportFilters.from_dict({"aggregation": "reliability-weighted"})))
    client = APIClient()
    client.force_authenticate(member_of(project, Role.LEAD))
    answer = client.post(f"/api/v1/projects/{project.slug}/exports/", {"format": "trl-preference", "filters": {"aggregation": "reliability-weighted"}}, format="json")
    assert answer.status_code == 400 and "reliability" in answer.json()["detail"]
    assert not DatasetSnapshot.objects.filter(project=project).exists()


def test_the_api_starts_a_fit_and_then_shows_it(labelled, member_of, django_capture_on_commit_callbacks):
    from rest_framework.test import APIClient

    from annotation.models import Role
    from annotation.services.reliability import reliability_fit_execute

    project, _ = labelled
    client = APIClient()
    client.force_authenticate(member_of(project, Role.LEAD))
    url = f"/api/v1/projects/{project.slug}/reliability/"
    assert client.get(url).status_code == 404
    with django_capture_on_commit_callbacks():
        started = client.post(url)
    assert started.status_code == 202 and started.json()["state"] == "queued"
    reliability_fit_execute(fit_id=started.json()["id"])
    shown = client.get(url).json()
    assert shown["state"] == "succeeded" and shown["profiles"]["lefty"]["flags"] and shown["labelers"]["ann"]["labels"] == 14
    labeler = APIClient()
    labeler.force_authenticate(member_of(project, Role.LABELER))
    assert labeler.get(url).status_code == 403 and labeler.post(url).status_code == 403


def test_the_quality_page_queues_a_fit_then_shows_it_and_each_labelers_page(labelled, client, member_of, django_capture_on_commit_callbacks):
    from django.urls import reverse

    from annotation.models import ReliabilityFit, Role
    from annotation.services.reliability import reliability_fit_execute

    project, _ = labelled
    client.force_login(member_of(project, Role.LEAD))
    with django_capture_on_commit_callbacks() as callbacks:
        page = client.get(reverse("quality", args=[project.slug])).content.decode()
    assert len(callbacks) == 1 and "A reliability fit is queued on the worker" in page
    reliability_fit_execute(fit_id=ReliabilityFit.objects.get().pk)
    page = client.get(reverse("quality", args=[project.slug])).content.decode()
    assert "Reliability fitted" in page and reverse("labeler-profile", args=[project.slug, "lefty"]) in page
    assert 'title="exact binomial test of left picks against 50%' in page
    lefty = client.get(reverse("labeler-profile", args=[project.slug, "lefty"])).content.decode()
    assert "position bias" in lefty and "exact binomial test of left picks against 50%" in lefty and "14 judgments" not in lefty
    ann = client.get(reverse("labeler-profile", args=[project.slug, "ann"])).content.decode()
    assert "None: no test flags this labeler." in ann
    assert client.get(reverse("labeler-profile", args=[project.slug, "nobody"])).status_code == 404


@pytest.mark.django_db
def test_a_round_can_train_on_the_reliability_weighted_files():
    from modeling.services.rounds import RoundError, snapshot_filters
    from modeling.services.rounds.settings import merged_config

    assert merged_config({"aggregation": "reliability-weighted"})["aggregation"] == "reliability-weighted"
    assert merged_config(None)["aggregation"] == "each"
    with pytest.raises(RoundError, match="aggregation"):
        merged_config({"aggregation": "mean"})
    files = snapshot_filters(round_number=2, previous_number=1, heldout_percent=10, dpo_strengths=["better"], aggregation="reliability-weighted",
                             reliability_fit=7)
    assert files["rm"]["aggregation"] == files["dpo"]["aggregation"] == "reliability-weighted"
    assert files["rm"]["reliability_fit"] == files["dpo"]["reliability_fit"] == 7
    assert "aggregation" not in files["heldout"]  # held-out accuracy reads each label, as in every round


def test_a_rounds_snapshot_step_fits_reliability_and_names_the_fit(labelled, settings, tmp_path):
    from annotation.models import ReliabilityFit
    from modeling.models import Round
    from modeling.services.rounds.settings import merged_config
    from modeling.services.rounds.steps import _step_snapshot

    settings.ARTIFACTS_DIR = tmp_path
    project, _ = labelled
    round_ = Round.objects.create(project=project, number=1, config={**merged_config({"aggregation": "reliability-weighted", "heldout_percent": 0})})
    summary = _step_snapshot(round_, tmp_path / "round-1")
    fit_row = ReliabilityFit.objects.get(pk=summary["reliability_fit"])
    assert fit_row.state == "succeeded" and summary["aggregation"] == "reliability-weighted"
    from annotation.models import DatasetSnapshot

    files = {s.purpose: s.filters for s in DatasetSnapshot.objects.filter(round=round_)}
    assert files["reward_model"]["reliability_fit"] == files["dpo"]["reliability_fit"] == fit_row.pk
    assert files["evaluation"]["aggregation"] == "each" and files["evaluation"]["reliability_fit"] is None
    rows = [json.loads(line) for line in (tmp_path / "round-1" / "snapshot" / "rm.jsonl").read_text().splitlines()]
    assert len(rows) == 14 and all("confidence" in row and row["labels"] == 4 for row in rows)


def test_length_bias_is_flagged_toward_the_longer_answer_only():
    """ann, bo and cy pick the better answer, which is the shorter one in 14 of 16 comparisons;
    len picks the longer every time (length bias); rand picks at random (against length as often
    as not, but that is low agreement, not a length bias)."""
    rng = random.Random(2)
    rows = []
    for c in range(16):
        a_longer = c < 2  # A is the better answer; it is the longer only in the first two
        for name in ("ann", "bo", "cy"):
            rows.append(ProfileRow(c, name, True, c % 2 == 0, "better", 5.0, a_longer=a_longer))
        rows.append(ProfileRow(c, "len", a_longer, c % 2 == 1, "better", 5.0, a_longer=a_longer))
        rows.append(ProfileRow(c, "rand", rng.random() < 0.5, c % 2 == 0, "better", 5.0, a_longer=a_longer))
    result = fit([Label(r.comparison, r.labeler, r.chose_a, r.a_left) for r in rows])
    profiles, _ = labeler_profiles(rows, result)
    assert profiles["len"]["length"]["labeler_longer_rate"] == 1.0 and profiles["len"]["length"]["consensus_longer_rate"] == 0.125
    assert "length bias" in {f["name"] for f in profiles["len"]["flags"]}
    assert profiles["rand"]["length"]["labeler_longer_rate"] > 0 and "length bias" not in {f["name"] for f in profiles["rand"]["flags"]}
    assert not profiles["ann"]["flags"]


def test_picking_the_shorter_answer_where_the_better_is_longer_is_low_agreement_not_length_bias():
    rows = []
    for c in range(16):
        a_longer = c >= 2  # A is the better answer and the longer in 14 of 16
        for name in ("ann", "bo", "cy"):
            rows.append(ProfileRow(c, name, True, c % 2 == 0, "better", 5.0, a_longer=a_longer))
        rows.append(ProfileRow(c, "contrary", False, c % 2 == 0, "better", 5.0, a_longer=a_longer))
    result = fit([Label(r.comparison, r.labeler, r.chose_a, r.a_left) for r in rows])
    profiles, _ = labeler_profiles(rows, result)
    contrary = profiles["contrary"]
    assert contrary["length"]["labeler_longer_rate"] == 0.125 and contrary["length"]["p"] < 0.01
    assert {f["name"] for f in contrary["flags"]} == {"low agreement"}


# --- hostile and degenerate input -------------------------------------------------------------------


@pytest.mark.parametrize("labels", [
    [Label(1, "solo", True, True)],  # one label
    [Label(c, "same", True, c % 2 == 0) for c in range(50)],  # one labeler who always says A
    [Label(c, w, True, True) for c in range(30) for w in ("a", "b", "c")],  # everyone A, A always on the left
    [Label(c, w, c % 2 == 0, True) for c in range(30) for w in ("a", "b")],  # perfectly separable
])
def test_degenerate_labels_give_finite_parameters_and_posteriors(labels):
    result = fit(labels)
    for params in result.labelers.values():
        assert math.isfinite(params.reliability) and math.isfinite(params.bias) and abs(params.reliability) < 50
    assert all(0.0 <= p <= 1.0 for p in result.posterior_a.values())
    rows = [ProfileRow(l.comparison, l.labeler, l.chose_a, l.a_left, None, 0.0) for l in labels]
    profiles, summary = labeler_profiles(rows, result)
    assert set(profiles) == {l.labeler for l in labels} and summary["judgments"] == len(labels)


def test_a_fit_of_a_project_without_human_judgments_succeeds_empty(db, django_capture_on_commit_callbacks):
    from tests.factories import ProjectFactory

    fit_row = _fitted(ProjectFactory(), django_capture_on_commit_callbacks)
    assert fit_row.state == "succeeded" and fit_row.judgments == 0 and fit_row.labelers == {} and fit_row.profiles == {}


@pytest.mark.django_db
def test_any_text_as_a_labelers_name_in_the_profile_url_is_a_page_or_a_404_never_an_error(client, member_of):
    from hypothesis import HealthCheck, given, settings, strategies as st
    from urllib.parse import quote

    from annotation.models import Role
    from tests.factories import ProjectFactory

    project = ProjectFactory()
    client.force_login(member_of(project, Role.LEAD))

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.text(min_size=1, max_size=80))
    def ask(name):
        answer = client.get(f"/p/{project.slug}/quality/labelers/{quote(name, safe='')}/")
        assert answer.status_code in (200, 404), (name, answer.status_code)

    ask()


@pytest.mark.django_db
def test_an_export_pins_the_fit_it_starts_with_and_a_newer_fit_changes_nothing(settings, tmp_path):
    from annotation.exports import ExportError, ExportFilters, export_rows
    from annotation.models import JobState, ReliabilityFit
    from annotation.services.exports import export_execute, export_start

    settings.ARTIFACTS_DIR = tmp_path
    project, c, first = _weighted_fixture()
    snapshot = export_start(project=project, format="trl-preference", filters={"aggregation": "reliability-weighted"})
    assert snapshot.filters["reliability_fit"] == first.pk
    # A newer fit that trusts x and y instead lands before the worker writes the file.
    ReliabilityFit.objects.create(project=project, state=JobState.SUCCEEDED, labelers={
        name: {"reliability": a, "bias": 0.0} for name, a in {"x": 2.5, "y": 2.5, "z": 0.05}.items()})
    export_execute(snapshot_id=snapshot.pk)
    snapshot.refresh_from_db()
    assert snapshot.state == "succeeded", snapshot.error
    (row,) = [json.loads(line) for line in (tmp_path / snapshot.path).read_text().splitlines()]
    assert row["chosen_response_id"] == c.response_b_id  # the pinned fit's verdict, not the newer one's
    assert f"reliability fit #{first.pk}" in snapshot.card
    newest = list(export_rows(project=project, format="trl-preference", filters=ExportFilters.from_dict({"aggregation": "reliability-weighted"})))
    assert newest[0]["chosen_response_id"] == c.response_a_id
    with pytest.raises(ExportError, match="no finished reliability fit #999"):
        list(export_rows(project=project, format="trl-preference", filters=ExportFilters.from_dict(
            {"aggregation": "reliability-weighted", "reliability_fit": 999})))


def test_a_fit_asked_twice_at_once_is_queued_once(labelled, django_capture_on_commit_callbacks):
    from annotation.models import ReliabilityFit
    from annotation.services.reliability import reliability_fit_start

    project, _ = labelled
    with django_capture_on_commit_callbacks():
        first = reliability_fit_start(project=project)
        second = reliability_fit_start(project=project)
    assert first.pk == second.pk and ReliabilityFit.objects.filter(project=project).count() == 1
