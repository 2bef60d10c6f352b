"""Schemathesis against our own OpenAPI schema, through the WSGI app, as a labeler, as a lead
and as a superuser (the only one of the three past the door of rounds and the committee).

Every operation of ``/api/schema/`` gets generated requests, valid and invalid (schemathesis'
positive and negative modes, its coverage phase of boundary values, and its checks of methods
and of missing credentials), and every answer must be no 5xx, a status code the schema documents,
a body that matches the documented schema, and a 4xx for invalid input. Path parameters are the
real project, assignment, export, round and member, so requests reach the code behind the door,
not just a 404. Bounded for CI: deterministic, ``MAX_EXAMPLES`` per operation; marked slow.
What was found and fixed: docs/reliability.md (Fuzzing).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from rest_framework.authtoken.models import Token

from annotation.models import DatasetSnapshot, Dialogue, JobState, PromptSource, ReliabilityFit, Role, SnapshotPurpose
from modeling.models import LiveTurn, Round, RoundState
from tests.factories import (
    AssignmentFactory,
    ComparisonFactory,
    JudgmentFactory,
    MemberFactory,
    MembershipFactory,
    ProjectFactory,
    PromptFactory,
    UserFactory,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

MAX_EXAMPLES = 25
SEED = 7


@pytest.fixture
def wsgi_in_test_transaction():
    """Our WSGI app, answering inside the test's transaction.

    Django's own test client does the same: the handler's request signals would otherwise close
    the connection the test's transaction lives on.
    """
    from config.wsgi import application

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield application
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def fuzz_world(settings, tmp_path):
    settings.ARTIFACTS_DIR = tmp_path
    # The schema's limit on an edit is the API's; a project can set a lower one, which no static
    # schema can state: this project takes the API's.
    project = ProjectFactory(slug="fuzz", gold_rate=0, ask_attributes=True, ask_rationale=True, max_edit_chars=200_000,
                             prompt_source=PromptSource.BOTH)
    labeler, lead, peer = UserFactory(username="fuzz-labeler"), UserFactory(username="fuzz-lead"), UserFactory()
    admin = UserFactory(username="fuzz-admin", is_staff=True, is_superuser=True)
    for user, role in ((labeler, Role.LABELER), (lead, Role.LEAD), (peer, Role.LABELER)):
        MembershipFactory(project=project, user=user, role=role)
    members = [MemberFactory(), MemberFactory()]
    comparisons = []
    for _ in range(6):
        prompt = PromptFactory(project=project)
        comparisons.append(ComparisonFactory(prompt=prompt, response_a__member=members[0], response_b__member=members[1]))
    assignment = AssignmentFactory(comparison=comparisons[0], labeler=labeler)
    JudgmentFactory(assignment__comparison=comparisons[1], assignment__labeler=peer, rationale="peer")
    # The labeler's own fresh judgment, for the review endpoints (changeable for 10 minutes).
    own = JudgmentFactory(assignment__comparison=comparisons[2], assignment__labeler=labeler)
    (Path(tmp_path) / "exports").mkdir()
    (Path(tmp_path) / "exports" / "fuzz.jsonl").write_text('{"row": 1}\n')
    export = DatasetSnapshot.objects.create(
        project=project, purpose=SnapshotPurpose.EXPORT, format="raw", path="exports/fuzz.jsonl", row_count=1,
        state=JobState.SUCCEEDED, sha256="0" * 64,
    )
    round_ = Round.objects.create(project=project, number=1, state=RoundState.FAILED, error="boom")
    # A finished reliability fit: an export aggregated "reliability-weighted" is then a valid request.
    ReliabilityFit.objects.create(project=project, state=JobState.SUCCEEDED)
    # The labeler's open live dialogue, whose first turn failed (it can be redrawn or written again).
    dialogue = Dialogue.objects.create(project=project, labeler=labeler)
    live_turn = LiveTurn.objects.create(
        dialogue=dialogue, turn_index=0, messages=[{"role": "user", "content": "hi"}], member_a=members[0],
        member_b=members[1], left_is_a=True, state=JobState.FAILED, error="side a: boom",
    )
    return {
        "tokens": {role: Token.objects.create(user=user).key for role, user in (("labeler", labeler), ("lead", lead), ("admin", admin))},
        "parameters": {
            "slug": project.slug, "assignment_id": assignment.pk, "snapshot_id": export.pk,
            "round_id": round_.pk, "id": members[0].pk, "judgment_id": own.pk,
            "dialogue_id": dialogue.pk, "turn_id": live_turn.pk,
        },
    }


def _schema(app, world, role):
    headers = {"Authorization": f"Token {world['tokens'][role]}"}
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            # As the schema's tokenAuth scheme, so schemathesis also checks that leaving it out or
            # sending a wrong one is refused.
            "auth": {"openapi": {"tokenAuth": {"api_key": headers["Authorization"]}}},
            "parameters": {f"path.{name}": value for name, value in world["parameters"].items()},
            # No NUL in strings: PostgreSQL text cannot hold one, so DRF refuses it with a 400.
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none", "allow-x00": False},
            # Stateful sequences need links between operations that this schema does not declare.
            "phases": {"stateful": {"enabled": False}},
            "operations": [
                {
                    # Any bytes are a schema-valid upload; whether they are a valid prompt file is
                    # what the import checks, and says with a 400 listing the bad lines.
                    "include-path": "/api/v1/projects/{slug}/imports/",
                    "checks": {"positive_data_acceptance": {"expected-statuses": ["201", "400", "403", "404"]}},
                },
                {
                    # A member's name is unique, what else it needs depends on its kind (a local
                    # model needs a path, an endpoint a URL and a model), and a PATCH is checked
                    # with the stored member: rules past the schema, answered 400 with the field.
                    # A second test of a member while the first waits for its answer is a 409.
                    "include-path-regex": "^/api/v1/members/",
                    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400", "403", "404", "409"]}},
                },
                {
                    # Filters may name a reliability fit by id: one the project lacks is refused at
                    # the start with a 400 naming the filter (the rows would otherwise read no fit).
                    "include-path": "/api/v1/projects/{slug}/exports/",
                    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400", "403", "404"]}},
                },
                {
                    # Starting the judge needs a project that names one (the fuzz project does not:
                    # a 400 that says so) and no run already waiting (a 409).
                    "include-path": "/api/v1/projects/{slug}/judge/",
                    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400", "403", "404", "409"]}},
                },
                {
                    # A live turn's text must say something and fit the project's rules (no
                    # system prompt here, its categories): 400 with the field; a turn while one
                    # is answered, or before the last is judged, is a 409; another's dialogue 404.
                    "include-path-regex": "^/api/v1/(projects/[^/]+/dialogue|dialogues|live-turns)/",
                    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400", "403", "404", "409"]}},
                },
            ],
        }
    )
    return schemathesis.openapi.from_wsgi("/api/schema/", app, config=config, headers=headers)


def _pytest_9_shim(request):
    # schemathesis 4.32.5 reads and renames ``node._nodeid`` for its report; pytest 9.2 keeps the
    # id elsewhere. Giving the node the attribute it reads is enough (it is read after the fixture).
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@pytest.fixture
def labeler_api(request, wsgi_in_test_transaction, fuzz_world):
    _pytest_9_shim(request)
    return _schema(wsgi_in_test_transaction, fuzz_world, "labeler")


@pytest.fixture
def lead_api(request, wsgi_in_test_transaction, fuzz_world):
    _pytest_9_shim(request)
    return _schema(wsgi_in_test_transaction, fuzz_world, "lead")


# Labelers and leads stop at the door of rounds and the committee; a superuser gets past it.
@pytest.fixture
def admin_api(request, wsgi_in_test_transaction, fuzz_world):
    _pytest_9_shim(request)
    return _schema(wsgi_in_test_transaction, fuzz_world, "admin")


BOUNDED = hypothesis_settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)

as_labeler = schemathesis.pytest.from_fixture("labeler_api")
as_lead = schemathesis.pytest.from_fixture("lead_api")
as_admin = schemathesis.pytest.from_fixture("admin_api")


@BOUNDED
@as_labeler.parametrize()
def test_the_api_holds_to_its_schema_for_a_labeler(case):
    case.call_and_validate()


@BOUNDED
@as_lead.parametrize()
def test_the_api_holds_to_its_schema_for_a_lead(case):
    case.call_and_validate()


@BOUNDED
@as_admin.parametrize()
def test_the_api_holds_to_its_schema_for_an_admin(case):
    case.call_and_validate()
