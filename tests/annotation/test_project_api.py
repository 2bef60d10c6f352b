"""Read APIs for leads: projects, prompts, comparisons, judgments; labelers never read others' labels."""

import pytest
from rest_framework.test import APIClient

from annotation.models import Role
from tests.factories import JudgmentFactory, ProjectFactory, PromptFactory

pytestmark = pytest.mark.django_db


def api(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_each_caller_sees_their_projects_with_their_role(member_of):
    mine, other = ProjectFactory(name="Mine"), ProjectFactory(name="Other")
    user = member_of(mine, Role.LEAD)
    listed = api(user).get("/api/v1/projects/").json()
    assert [(p["slug"], p["role"]) for p in listed] == [(mine.slug, "lead")]
    assert other.slug not in str(listed)


def test_a_project_lists_its_labeling_settings_and_a_judgment_its_safety_bin(member_of):
    judgment = JudgmentFactory(safety="chosen_safe")
    project = judgment.comparison.project
    type(project).objects.filter(pk=project.pk).update(ask_safety=True, prompt_source="both", prompt_categories=["Code"])
    lead = api(member_of(project, Role.LEAD))
    (listed,) = lead.get("/api/v1/projects/").json()
    assert {k: listed[k] for k in ("ask_safety", "prompt_source", "written_share", "dialogue_max_turns", "allow_system_prompt",
                                   "prompt_categories", "live_share")} == {
        "ask_safety": True, "prompt_source": "both", "written_share": 0.25, "dialogue_max_turns": 4,
        "allow_system_prompt": False, "prompt_categories": ["Code"], "live_share": False,
    }
    assert lead.get(f"/api/v1/projects/{project.slug}/judgments/").json()["results"][0]["safety"] == "chosen_safe"


def test_leads_read_prompts_comparisons_and_judgments_paginated(member_of):
    judgment = JudgmentFactory()
    project = judgment.comparison.project
    for _ in range(55):
        PromptFactory(project=project)
    lead = api(member_of(project, Role.LEAD))
    page = lead.get(f"/api/v1/projects/{project.slug}/prompts/").json()
    assert page["count"] == 56 and len(page["results"]) == 50 and page["next"]
    comparisons = lead.get(f"/api/v1/projects/{project.slug}/comparisons/").json()
    assert [c["id"] for c in comparisons["results"]] == [judgment.comparison_id]
    judgments = lead.get(f"/api/v1/projects/{project.slug}/judgments/").json()["results"]
    assert judgments[0]["labeler"] == judgment.labeler.username and judgments[0]["strength"] == "better"


def test_labelers_and_outsiders_cannot_read_labels(member_of):
    judgment = JudgmentFactory()
    project = judgment.comparison.project
    labeler = api(member_of(project, Role.LABELER))
    for path in ("prompts", "comparisons", "judgments"):
        assert labeler.get(f"/api/v1/projects/{project.slug}/{path}/").status_code == 403
    outsider = api(member_of(ProjectFactory(), Role.ADMIN))
    assert outsider.get(f"/api/v1/projects/{project.slug}/judgments/").status_code == 404
    assert APIClient().get(f"/api/v1/projects/{project.slug}/judgments/").status_code in (401, 403)
