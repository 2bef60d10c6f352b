"""A lead browses comparisons and judgments in the app (filters, edits as diffs, rationales,
gold results) and marks gold there, audited; no Django admin needed."""

import pytest
from django.urls import reverse

from annotation.models import AuditAction, AuditEvent, Comparison, ComparisonSource, ResponseSource, Role, Strength
from annotation.selectors import comparisons_browse, word_diff
from annotation.services.gold import GoldError, comparison_set_gold
from tests.factories import ComparisonFactory, JudgmentFactory, MemberFactory, ProjectFactory, PromptFactory, ResponseFactory

pytestmark = pytest.mark.django_db


def comparison(project, n, *, source=ComparisonSource.COMMITTEE):
    prompt = PromptFactory(project=project, messages=[{"role": "user", "content": f"Question {n}: <b>bold?</b>"}])
    return ComparisonFactory(
        prompt=prompt, source=source,
        response_a=ResponseFactory(prompt=prompt, text=f"Alpha answer {n}", member=MemberFactory(name=f"alpha-{n}")),
        response_b=ResponseFactory(prompt=prompt, text=f"Beta answer {n}"),
    )


def judge(c, labeler, *, side="a", strength=Strength.BETTER, edit=None, rationale=""):
    chosen, rejected = (c.response_a, c.response_b) if side == "a" else (c.response_b, c.response_a)
    edited = ResponseFactory(prompt=c.prompt, text=edit, source=ResponseSource.HUMAN_EDIT, parent=chosen, author=labeler,
                             edit_distance=5) if edit else None
    return JudgmentFactory(assignment__comparison=c, assignment__labeler=labeler, assignment__left_response=c.response_b,
                           chosen_response=chosen, rejected_response=rejected, strength=strength, edited_response=edited,
                           rationale=rationale)


def test_word_diff_marks_what_the_edit_changed():
    assert word_diff("The answer is 41.", "The answer is 42, see below.") == [
        ("same", "The answer is "), ("del", "41."), ("ins", "42, see below."),
    ]


def test_filters_by_source_gold_progress_and_labeler(member_of):
    project = ProjectFactory(overlap_k=2)
    ada, bob = member_of(project, Role.LABELER, username="ada"), member_of(project, Role.LABELER, username="bob")
    none, some, full = comparison(project, 1), comparison(project, 2), comparison(project, 3)
    imported = comparison(project, 4, source=ComparisonSource.IMPORT)
    judge(some, ada)
    judge(full, ada), judge(full, bob, side="b")
    comparison_set_gold(comparison=none, winner="b", user=None)

    def ids(**filters):
        return [row["comparison"].pk for row in comparisons_browse(project=project, **filters)["rows"]]

    assert ids() == [imported.pk, full.pk, some.pk, none.pk]
    assert ids(source="import") == [imported.pk] and ids(gold="yes") == [none.pk]
    assert ids(labeled="none") == [imported.pk, none.pk] and ids(labeled="some") == [some.pk] and ids(labeled="complete") == [full.pk]
    assert ids(labeler="bob") == [full.pk]
    row = next(r for r in comparisons_browse(project=project)["rows"] if r["comparison"].pk == full.pk)
    assert [(j["labeler"], j["side"]) for j in row["judgments"]] == [("ada", "A"), ("bob", "B")]
    assert row["members"][0] == "alpha-3"


def test_the_pages_show_edits_rationales_and_gold_results_escaped(client, member_of):
    project = ProjectFactory()
    ada = member_of(project, Role.LABELER, username="ada")
    c = comparison(project, 1)
    judge(c, ada, edit="Alpha answer 1, with <script>alert(1)</script> more", rationale="A is <i>clearer</i>")
    comparison_set_gold(comparison=c, winner="b", user=None)
    client.force_login(member_of(project, Role.LEAD))
    listing = client.get(reverse("comparisons", kwargs={"slug": project.slug}) + "?labeler=ada&gold=yes").content.decode()
    assert f'href="/p/{project.slug}/comparisons/{c.pk}/"' in listing and "ada: A, better, edited" in listing
    assert "1 comparison<" in listing and "B wins" in listing
    page = client.get(reverse("comparison", kwargs={"slug": project.slug, "comparison_id": c.pk})).content.decode()
    assert "<del>1</del><ins>1, with &lt;script&gt;alert(1)&lt;/script&gt; more</ins>" in page and "<script>alert" not in page
    assert "“A is &lt;i&gt;clearer&lt;/i&gt;”" in page
    assert "misses gold" in page and "A was shown on the right" in page
    assert "&lt;b&gt;bold?&lt;/b&gt;" in page  # the prompt, as text
    other = ProjectFactory()
    assert client.get(reverse("comparison", kwargs={"slug": project.slug, "comparison_id": comparison(other, 9).pk})).status_code == 404


def test_a_lead_marks_gold_from_the_page_and_it_is_audited(client, member_of):
    project = ProjectFactory()
    c, imported = comparison(project, 1), comparison(project, 2, source=ComparisonSource.IMPORT)
    client.force_login(member_of(project, Role.LEAD, username="lena"))
    url = reverse("comparison-gold", kwargs={"slug": project.slug, "comparison_id": c.pk})
    page = client.post(url, {"winner": "a"}, follow=True).content.decode()
    c.refresh_from_db()
    assert c.is_gold and c.gold_winner_id == c.response_a_id and "gold, A is the better answer" in page
    client.post(url, {"winner": "none"})
    c.refresh_from_db()
    assert not c.is_gold and c.gold_winner_id is None
    refused = client.post(reverse("comparison-gold", kwargs={"slug": project.slug, "comparison_id": imported.pk}), {"winner": "a"}, follow=True)
    assert "Nothing changed: Imported comparisons" in refused.content.decode() and not Comparison.objects.get(pk=imported.pk).is_gold
    bad = client.post(url, {"winner": "c"}, follow=True)
    assert "winner: expected a, b or none" in bad.content.decode()
    assert list(AuditEvent.objects.filter(action=AuditAction.GOLD_SET).values_list("actor_name", "target")) == [
        ("lena", f"comparison {c.pk}"), ("lena", f"comparison {c.pk}"),
    ]


def test_gold_refuses_imported_comparisons_in_the_service_too():
    project = ProjectFactory()
    with pytest.raises(GoldError):
        comparison_set_gold(comparison=comparison(project, 1, source=ComparisonSource.IMPORT), winner="a", user=None)
