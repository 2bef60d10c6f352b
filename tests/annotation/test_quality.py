"""Agreement statistics and Bradley-Terry ratings against hand-computed values."""

import math

import pytest

from annotation.models import Role, Strength
from annotation.quality import (
    bootstrap_intervals,
    bradley_terry,
    cohen_kappa,
    krippendorff_alpha_ordinal,
    project_leaderboard,
    project_quality,
)
from tests.factories import (
    ComparisonFactory,
    JudgmentFactory,
    MemberFactory,
    ProjectFactory,
    PromptFactory,
    ResponseFactory,
    UserFactory,
)


def test_cohen_kappa_on_a_hand_computed_case():
    a = list("aaaaabbbbb")
    b = list("aaaabbbbba")
    # p_o = 0.8, p_e = 0.5*0.5 + 0.5*0.5 = 0.5, kappa = (0.8 - 0.5) / 0.5
    assert cohen_kappa(a, b) == pytest.approx(0.6)
    assert cohen_kappa(a, a) == 1.0
    assert cohen_kappa(["a"] * 4, ["a"] * 4) is None  # chance agreement is total: undefined


def test_krippendorff_alpha_ordinal_on_hand_computed_cases():
    assert krippendorff_alpha_ordinal({1: [1, 1], 2: [2, 2], 3: [1, 2]}) == pytest.approx(4 / 9)
    # three ordered values: n = (2, 2, 4); D_o = 76, D_e = 576, alpha = 1 - 7 * 76 / 576
    assert krippendorff_alpha_ordinal({1: [1, 2], 2: [2, 3], 3: [1, 3], 4: [3, 3]}) == pytest.approx(1 - 7 * 76 / 576)
    assert krippendorff_alpha_ordinal({1: [-4, -4], 2: [3, 3], 3: [1, 1, 1]}) == 1.0
    assert krippendorff_alpha_ordinal({1: [2]}) is None  # nothing pairable


def test_bradley_terry_recovers_a_known_win_ratio():
    ratings = bradley_terry([("A", "B", 1.0)] * 30 + [("A", "B", 0.0)] * 10)
    assert ratings["A"] - ratings["B"] == pytest.approx(400 * math.log10(3), abs=1.0)
    chain = bradley_terry([("A", "B", 1.0)] * 8 + [("B", "A", 1.0)] * 2 + [("B", "C", 1.0)] * 8 + [("C", "B", 1.0)] * 2)
    assert chain["A"] > chain["B"] > chain["C"]
    low, high = bootstrap_intervals([("A", "B", 1.0)] * 30 + [("A", "B", 0.0)] * 10, rounds=100)["A"]
    assert low < ratings["A"] < high


@pytest.mark.django_db
def test_project_quality_and_leaderboard_on_a_small_project(member_of):
    project = ProjectFactory(overlap_k=2)
    strong, weak = MemberFactory(name="strong"), MemberFactory(name="weak")
    ada, bob = member_of(project, Role.LABELER, username="ada"), member_of(project, Role.LABELER, username="bob")
    for i in range(6):
        prompt = PromptFactory(project=project, category="math" if i < 3 else "writing")
        c = ComparisonFactory(prompt=prompt, response_a=ResponseFactory(prompt=prompt, member=strong), response_b=ResponseFactory(prompt=prompt, member=weak))
        for user in (ada, bob):
            # both prefer the strong member, except bob on the last comparison
            chosen = c.response_b if (user == bob and i == 5) else c.response_a
            other = c.response_a if chosen == c.response_b else c.response_b
            JudgmentFactory(assignment__comparison=c, assignment__labeler=user, chosen_response=chosen,
                            rejected_response=other, left_response=c.response_a, strength=Strength.BETTER)
    quality = project_quality(project=project)
    assert quality["judgments"] == 12 and quality["overlap_reached"] == 6 and quality["percent_agreement"] == pytest.approx(5 / 6, abs=1e-4)
    (pair,) = quality["pairs"]
    assert pair["labelers"] == ["ada", "bob"] and pair["shared"] == 6 and pair["agreement"] == pytest.approx(5 / 6, abs=1e-4)
    ada_row = next(r for r in quality["labelers"] if r["labeler"] == "ada")
    assert ada_row["left_share"] == 1.0 and ada_row["strengths"] == {"better": 6} and ada_row["median_seconds"] == 12.0
    board = project_leaderboard(project=project, bootstrap_rounds=50)
    assert [m["name"] for m in board["members"]] == ["strong", "weak"] and board["battles"] == 12
    assert board["win_rate"]["strong"]["weak"] == pytest.approx(11 / 12, abs=1e-3)
    math_board = project_leaderboard(project=project, category="math", bootstrap_rounds=20)
    assert math_board["battles"] == 6 and math_board["win_rate"]["strong"]["weak"] == 1.0


@pytest.mark.django_db
def test_the_quality_and_leaderboard_pages_render_for_leads_only(client, member_of):
    project = ProjectFactory()
    member = MemberFactory(name="<b>evil</b>")
    prompt = PromptFactory(project=project, category="math")
    c = ComparisonFactory(prompt=prompt, response_a=ResponseFactory(prompt=prompt, member=member), response_b=ResponseFactory(prompt=prompt))
    JudgmentFactory(assignment__comparison=c, assignment__labeler=UserFactory(username="<script>x</script>"))
    client.force_login(member_of(project, Role.LEAD))
    quality_page = client.get(f"/p/{project.slug}/quality/").content.decode()
    assert "Label quality" in quality_page and "&lt;script&gt;x&lt;/script&gt;" in quality_page and "<script>x" not in quality_page
    board = client.get(f"/p/{project.slug}/leaderboard/?category=math").content.decode()
    assert "&lt;b&gt;evil&lt;/b&gt;" in board and "<b>evil" not in board
    client.force_login(member_of(project, Role.LABELER))
    assert client.get(f"/p/{project.slug}/quality/").status_code == 403
    assert client.get(f"/p/{project.slug}/leaderboard/").status_code == 403


@pytest.mark.django_db
def test_the_pages_speak_the_scale_hint_at_gold_and_keep_similar_member_names_apart(client, member_of):
    project = ProjectFactory(overlap_k=1)
    a, b = MemberFactory(name="SmolLM2-135M-Instruct"), MemberFactory(name="SmolLM2-135M-Instruct (t=1.0)")
    prompt = PromptFactory(project=project)
    c = ComparisonFactory(prompt=prompt, response_a=ResponseFactory(prompt=prompt, member=a), response_b=ResponseFactory(prompt=prompt, member=b))
    JudgmentFactory(assignment__comparison=c, chosen_response=c.response_a, rejected_response=c.response_b,
                    left_response=c.response_a, strength=Strength.SLIGHTLY_BETTER)
    client.force_login(member_of(project, Role.LEAD))
    quality = client.get(f"/p/{project.slug}/quality/").content.decode()
    assert "Slightly better: 1" in quality and "slightly_better" not in quality
    assert "Negligibly better / unsure</text>" in quality  # the chart's axis, not cut at 14 characters
    assert "no gold comparisons yet" in quality
    board = client.get(f"/p/{project.slug}/leaderboard/").content.decode()
    assert "<th>#1 SmolLM2-135M-Instruct" in board and "<th>#2 SmolLM2-135M-Instruct (t=1.0)</th>" in board
    assert '<th title="SmolLM2-135M-Instruct (t=1.0)">#' in board and "Instru…" not in board.split("Win rate")[1]


@pytest.mark.django_db
def test_a_lead_sets_the_quality_threshold_and_a_bad_value_changes_nothing(client, member_of):
    project = ProjectFactory(labeler_quality_threshold=0.6)
    client.force_login(member_of(project, Role.LEAD))
    client.post(f"/p/{project.slug}/quality/threshold/", {"threshold": "0.75"})
    project.refresh_from_db()
    assert project.labeler_quality_threshold == 0.75
    response = client.post(f"/p/{project.slug}/quality/threshold/", {"threshold": "2"}, follow=True)
    project.refresh_from_db()
    assert project.labeler_quality_threshold == 0.75 and "nothing changed" in response.content.decode()
    client.force_login(member_of(project, Role.LABELER))
    assert client.post(f"/p/{project.slug}/quality/threshold/", {"threshold": "0.1"}).status_code == 403
