"""Every route, every method, every role: each caller gets exactly what the table says.

The routes are not listed by hand: the test walks ``get_resolver()`` (pages, the API with its
DRF router, the schema and docs, the Django admin) and fails on any route the table below does
not name, so a new page or endpoint cannot ship before someone decides who may reach it.

Each route is requested with real objects in its URL (the project's slug, a labeler's
assignment, a finished export, a round, a committee member, every admin model's row) by each
of eight callers. Every response a labeler (or an outsider) gets is also searched for what a
labeler must never receive: committee members' names, another labeler's judgment, an export's
bytes, an admin page.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.test import Client
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.utils import timezone
from rest_framework.authtoken.models import Token

from annotation.models import AssignmentState, AuditEvent, DatasetSnapshot, Dialogue, JobState, PromptSource, ReliabilityFit, Role, SnapshotPurpose
from modeling.models import LiveTurn, Round, RoundState, SamplingRun
from tests.factories import (
    AssignmentFactory,
    ComparisonFactory,
    JudgmentFactory,
    MemberFactory,
    MembershipFactory,
    ProjectFactory,
    PromptFactory,
    ResponseFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

ROLES = (
    "anonymous",
    "labeler_elsewhere",  # a labeler of another project
    "lead_elsewhere",  # a lead of another project
    "labeler",  # labeler of this project
    "lead",  # lead of this project
    "project_admin",  # admin role in this project, not Django staff
    "staff",  # Django staff (is_staff), no project role, no model permissions
    "superuser",  # Django staff and superuser: admin everywhere
)
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

LOGIN = "login"  # 302 to /login/?next=...
ADMIN_LOGIN = "admin-login"  # 302 to /admin/login/?next=...
REFUSED = {LOGIN, ADMIN_LOGIN, 401, 403, 404, 405}

# --- The table ---------------------------------------------------------------------------------
# route -> {method: outcome for each role, in ROLES order}. An int is the exact status (a 302 is
# a page's redirect after its form, never the login page); LOGIN / ADMIN_LOGIN are redirects to
# sign in. A method missing from a route's entry must be refused to every role (and answered
# 405 to a superuser): so adding a method to a view also needs a line here.
AL = ADMIN_LOGIN
SKIP = "not asked"  # staff in the Django admin's own forms: Django's business, not this table's
#             anonymous    lab-else   lead-else  labeler lead  proj-admin staff superuser
PUBLIC = (200, 200, 200, 200, 200, 200, 200, 200)
SIGNED_IN_API = (403, 200, 200, 200, 200, 200, 200, 200)
SIGNED_IN_PAGE = (LOGIN, 200, 200, 200, 200, 200, 200, 200)
LABELER_PAGE = (LOGIN, 404, 404, 200, 200, 200, 404, 200)
LEAD_PAGE = (LOGIN, 404, 404, 403, 200, 200, 404, 200)
LEAD_FORM = (LOGIN, 404, 404, 403, 302, 302, 404, 302)
ADMIN_PAGE = (LOGIN, 404, 404, 403, 403, 200, 404, 200)
ADMIN_FORM = (LOGIN, 404, 404, 403, 403, 302, 404, 302)
LEAD_API = (403, 404, 404, 403, 200, 200, 404, 200)
ADMIN_API = (403, 404, 404, 403, 403, 200, 404, 200)
STAFF_API = (403, 403, 403, 403, 403, 403, 200, 200)

ROUTES: dict[str, dict[str, tuple]] = {
    # Load balancers ask without credentials; the body names no project, member or user.
    "healthz": {"GET": PUBLIC},
    # Signed-in users are sent home; a PUT/PATCH/DELETE is not a login attempt.
    "login": {"GET": (200, 302, 302, 302, 302, 302, 302, 302), "POST": (200, 302, 302, 302, 302, 302, 302, 302)},
    "logout": {"POST": (LOGIN,) * 8, "OPTIONS": PUBLIC},
    "home": {"GET": SIGNED_IN_PAGE},
    # Leads and admins of any project, and staff, may start a project (the body is incomplete:
    # the form comes back, so the outcome does not depend on who created one first).
    "project-new": {"GET": (LOGIN, 403, 200, 403, 200, 200, 200, 200), "POST": (LOGIN, 403, 200, 403, 200, 200, 200, 200)},
    "project-settings": {"GET": LEAD_PAGE, "POST": LEAD_FORM},
    # A study link is for anyone the platform sends (asked with a participant's id, see QUERIES):
    # it signs the caller in as that participant, whoever they were, and sends them to label.
    "study-join": {"GET": (302,) * 8},
    "label": {"GET": LABELER_PAGE},
    "label-today": {"GET": LABELER_PAGE},
    "label-live": {"GET": LABELER_PAGE},
    # Anyone who labels may post the form; a judgment that is not theirs is refused with a message.
    "judgment-change": {"POST": (LOGIN, 404, 404, 302, 302, 302, 404, 302)},
    "project": {"GET": LEAD_PAGE},
    "import-upload": {"POST": LEAD_FORM},
    "comparisons": {"GET": LEAD_PAGE},
    "comparison": {"GET": LEAD_PAGE},
    "comparison-gold": {"POST": LEAD_FORM},
    "quality": {"GET": LEAD_PAGE},
    "quality-threshold": {"POST": LEAD_FORM},
    "quality-fit": {"POST": LEAD_FORM},
    "quality-judge": {"POST": LEAD_FORM},
    "labeler-profile": {"GET": LEAD_PAGE},
    "leaderboard": {"GET": LEAD_PAGE},
    "snapshot-download": {"GET": LEAD_PAGE},
    # A lead weighs the shared members for the project and tests them; adding them is for staff.
    "project-member-weight": {"POST": LEAD_FORM},
    "project-member-test": {"POST": LEAD_FORM},
    "rounds": {"GET": ADMIN_PAGE},
    "round-start": {"POST": ADMIN_FORM},
    "round-schedule": {"POST": ADMIN_FORM},
    "round-retry": {"POST": ADMIN_FORM},
    "round-cancel": {"POST": ADMIN_FORM},
    # Who changed what: Django staff (non-staff are sent to the admin login).
    "audit-log": {"GET": (AL,) * 6 + (200, 200)},
    # The committee is shared by every project and names worker paths and key variables: staff.
    # The add form's body is incomplete, so it comes back with its errors (400).
    "committee": {"GET": (AL,) * 6 + (200, 200)},
    "committee-add": {"POST": (AL,) * 6 + (400, 400)},
    "committee-member-settings": {"POST": (AL,) * 6 + (302, 302)},
    "committee-member-active": {"POST": (AL,) * 6 + (302, 302)},
    "committee-member-test": {"POST": (AL,) * 6 + (302, 302)},
    # The schema and its docs: signed-in users (the schema names no data).
    "api-schema": {"GET": SIGNED_IN_API, "OPTIONS": SIGNED_IN_API},
    "api-docs": {"GET": SIGNED_IN_PAGE},
    "api-redoc": {"GET": SIGNED_IN_PAGE},
    # Projects the caller has a role in (none: an empty list).
    "api-projects": {"GET": SIGNED_IN_API, "OPTIONS": SIGNED_IN_API},
    # Labeling: anyone who labels in the project; an assignment answers only its own labeler
    # (404 to everyone else, leads and superusers included: nobody submits in someone's name).
    "api-next": {"POST": (403, 404, 404, 200, 200, 200, 404, 200), "OPTIONS": (403, 404, 404, 200, 200, 200, 404, 200)},
    "api-queue": {"GET": (403, 404, 404, 200, 200, 200, 404, 200), "OPTIONS": (403, 404, 404, 200, 200, 200, 404, 200)},
    "api-submit": {"POST": (403, 404, 404, 201, 404, 404, 404, 404), "OPTIONS": SIGNED_IN_API},
    "api-skip": {"POST": (403, 404, 404, 200, 404, 404, 404, 404), "OPTIONS": SIGNED_IN_API},
    # A judgment changes only for its own labeler, within the window: 404 to everyone else.
    "api-my-judgments": {"GET": (403, 404, 404, 200, 200, 200, 404, 200), "OPTIONS": (403, 404, 404, 200, 200, 200, 404, 200)},
    "api-judgment-change": {"POST": (403, 404, 404, 200, 404, 404, 404, 404), "OPTIONS": SIGNED_IN_API},
    # Leads' reads and jobs.
    "api-prompts": {"GET": LEAD_API, "OPTIONS": LEAD_API},
    "api-comparisons": {"GET": LEAD_API, "OPTIONS": LEAD_API},
    "api-judgments": {"GET": LEAD_API, "OPTIONS": LEAD_API},
    "api-imports": {"POST": (403, 404, 404, 403, 201, 201, 404, 201), "OPTIONS": LEAD_API},
    "api-exports": {"GET": LEAD_API, "POST": (403, 404, 404, 403, 202, 202, 404, 202), "OPTIONS": LEAD_API},
    "api-reliability": {"GET": LEAD_API, "POST": (403, 404, 404, 403, 202, 202, 404, 202), "OPTIONS": LEAD_API},
    "api-export-download": {"GET": (403, 404, 404, 404, 200, 200, 404, 200), "OPTIONS": SIGNED_IN_API},
    # 409: the world has no pending prompt to sample; the caller got past the door.
    "api-project-committee": {"GET": LEAD_API, "OPTIONS": LEAD_API},
    "api-sampling": {"GET": LEAD_API, "POST": (403, 404, 404, 403, 409, 409, 404, 409), "OPTIONS": LEAD_API},
    # The matrix's project names no judge: a clear 400 for those who may ask.
    "api-judge": {"GET": LEAD_API, "POST": (403, 404, 404, 403, 400, 400, 404, 400), "OPTIONS": LEAD_API},
    # Rounds: admins of the project.
    # Live dialogues: anyone who labels writes their own; a dialogue and its turns are its
    # labeler's alone (a superuser included: it is someone's work in progress).
    "api-dialogue": {"GET": (403, 404, 404, 200, 204, 204, 404, 204), "POST": (403, 404, 404, 201, 201, 201, 404, 201),
                     "OPTIONS": (403, 404, 404, 200, 200, 200, 404, 200)},
    "api-dialogue-turns": {"POST": (403, 404, 404, 201, 404, 404, 404, 404), "OPTIONS": SIGNED_IN_API},
    "api-dialogue-end": {"POST": (403, 404, 404, 200, 404, 404, 404, 404), "OPTIONS": SIGNED_IN_API},
    "api-live-turn": {"GET": (403, 404, 404, 200, 404, 404, 404, 404), "OPTIONS": SIGNED_IN_API},
    "api-live-turn-redraw": {"POST": (403, 404, 404, 201, 404, 404, 404, 404), "OPTIONS": SIGNED_IN_API},
    "api-rounds": {"GET": ADMIN_API, "POST": (403, 404, 404, 403, 403, 202, 404, 202), "OPTIONS": ADMIN_API},
    "api-round": {"GET": (403, 404, 404, 404, 404, 200, 404, 200), "OPTIONS": SIGNED_IN_API},
    "api-round-retry": {"POST": (403, 404, 404, 404, 404, 200, 404, 200), "OPTIONS": SIGNED_IN_API},
    "api-round-cancel": {"POST": (403, 404, 404, 404, 404, 200, 404, 200), "OPTIONS": SIGNED_IN_API},
    # The committee is shared by all projects: Django staff only.
    "member-list": {"GET": STAFF_API, "POST": (403, 403, 403, 403, 403, 403, 201, 201), "OPTIONS": STAFF_API},
    "member-detail": {"GET": STAFF_API, "PUT": STAFF_API, "PATCH": STAFF_API, "OPTIONS": STAFF_API},
    "member-test": {"POST": (403, 403, 403, 403, 403, 403, 202, 202), "OPTIONS": STAFF_API},
}

# Django admin: staff only. Non-staff callers are sent to the admin login whatever the method;
# staff without model permissions see the index but no model. Every model registered in the
# admin is named here: a new registration is reviewed like a new route.
ADMIN_MODELS = {
    "auth.user", "auth.group", "authtoken.tokenproxy",
    "annotation.project", "annotation.membership", "annotation.prompt", "annotation.response",
    "annotation.comparison", "annotation.assignment", "annotation.judgment", "annotation.datasetsnapshot",
    "modeling.committeemember", "modeling.round", "annotation.auditevent",
}
NON_STAFF = (AL,) * 6
ADMIN_MODEL_PAGE = {"GET": NON_STAFF + (403, 200), "POST": NON_STAFF + (SKIP, SKIP)}
ADMIN_ROUTES: dict[str, dict[str, tuple]] = {
    # The admin's own login form is open to all (and throttled like ours); staff are sent in.
    "admin:login": {"GET": (200,) * 6 + (302, 302), "POST": (200,) * 8},
    # Logout answers POST; outsiders are sent to the index (and from there to the login).
    "admin:logout": {"GET": (302,) * 6 + (405, 405), "POST": (302,) * 6 + (LOGIN, LOGIN)},
    "admin:index": {"GET": NON_STAFF + (200, 200), "POST": NON_STAFF + (SKIP, SKIP)},
    "admin:app_list": {"GET": NON_STAFF + (404, 200), "POST": NON_STAFF + (SKIP, SKIP)},
    "admin:password_change": {"GET": NON_STAFF + (200, 200), "POST": NON_STAFF + (SKIP, SKIP)},
    "admin:password_change_done": {"GET": NON_STAFF + (200, 200), "POST": NON_STAFF + (405, 405)},
    "admin:jsi18n": {"GET": NON_STAFF + (200, 200), "POST": NON_STAFF + (405, 405)},
    "admin:autocomplete": {"GET": NON_STAFF + (403, 403), "POST": NON_STAFF + (405, 405)},
    "admin:view_on_site": {"GET": NON_STAFF + (404, 404), "POST": NON_STAFF + (404, 404)},
    "admin/(?P<url>.*)$": {"GET": NON_STAFF + (404, 404), "POST": NON_STAFF + (404, 404)},
    **{
        f"admin:{model.replace('.', '_')}_{view}": ADMIN_MODEL_PAGE
        for model in ADMIN_MODELS
        for view in ("changelist", "add", "change", "delete", "history")
    },
    "admin:auth_user_password_change": ADMIN_MODEL_PAGE,
    # The audit log is read-only for everyone, superusers included: no add, change or delete.
    "admin:annotation_auditevent_add": {"GET": NON_STAFF + (403, 403), "POST": NON_STAFF + (403, 403)},
    "admin:annotation_auditevent_delete": {"GET": NON_STAFF + (403, 403), "POST": NON_STAFF + (403, 403)},
    "admin:annotation_auditevent_change": {"GET": NON_STAFF + (403, 200), "POST": NON_STAFF + (403, 403)},
    # /admin/<app>/<model>/<id>/ redirects to the change page (which then checks permissions).
    **{
        f"admin/{model.replace('.', '/')}/<path:object_id>/": {"GET": NON_STAFF + (302, 302), "POST": NON_STAFF + (SKIP, SKIP)}
        for model in ADMIN_MODELS
    },
}


# --- The world ----------------------------------------------------------------------------------
MEMBER_NAMES = ("secret-member-alpha", "secret-member-beta")
PEER_RATIONALE = "PEER-RATIONALE-7f3a: the left one cites its sources"
EXPORT_BYTES = b'{"row": "EXPORT-BYTES-9c1e"}\n'
ADMIN_MARKER = "Arbiter administration"


@dataclass
class World:
    project: object
    users: dict = field(default_factory=dict)
    tokens: dict = field(default_factory=dict)
    kwargs: dict = field(default_factory=dict)
    admin_ids: dict = field(default_factory=dict)
    bodies: dict = field(default_factory=dict)


@pytest.fixture
def world(settings, tmp_path, monkeypatch) -> World:
    settings.ARTIFACTS_DIR = tmp_path
    # /healthz waits a second for workers to answer a ping; who may ask does not depend on it.
    monkeypatch.setattr("config.health._workers", lambda: [])
    project = ProjectFactory(
        slug="matrix", prompt_source=PromptSource.BOTH, study_open=True,
        study_completion_url="https://app.prolific.com/submissions/complete?cc={code}", study_completion_code="MATRIX1",
    )
    elsewhere = ProjectFactory(slug="elsewhere")
    users = {
        "labeler_elsewhere": _member(elsewhere, Role.LABELER, "m-labeler-elsewhere"),
        "lead_elsewhere": _member(elsewhere, Role.LEAD, "m-lead-elsewhere"),
        "labeler": _member(project, Role.LABELER, "m-labeler"),
        "lead": _member(project, Role.LEAD, "m-lead"),
        "project_admin": _member(project, Role.ADMIN, "m-project-admin"),
        "staff": UserFactory(username="m-staff", is_staff=True),
        "superuser": UserFactory(username="m-superuser", is_staff=True, is_superuser=True),
    }
    peer = _member(project, Role.LABELER, "m-peer")
    alpha, beta = (MemberFactory(name=name) for name in MEMBER_NAMES)

    def comparison():
        prompt = PromptFactory(project=project)
        return ComparisonFactory(
            prompt=prompt,
            response_a=ResponseFactory(prompt=prompt, member=alpha),
            response_b=ResponseFactory(prompt=prompt, member=beta),
        )

    labelled, _open = comparison(), comparison()
    # The labeler holds a lease on the first (submit and skip act on it); the second is what
    # "next" hands out. A peer has judged the first: a labeler must never see that judgment.
    assignment = AssignmentFactory(comparison=labelled, labeler=users["labeler"])
    judgment = JudgmentFactory(
        assignment=AssignmentFactory(
            comparison=labelled, labeler=peer, state=AssignmentState.SUBMITTED, ended_at=timezone.now()
        ),
        rationale=PEER_RATIONALE,
    )
    # The labeler's own judgment of a minute ago, which they may still change.
    own = JudgmentFactory(
        assignment=AssignmentFactory(
            comparison=comparison(), labeler=users["labeler"], state=AssignmentState.SUBMITTED, ended_at=timezone.now()
        ),
        submitted_at=timezone.now(),
    )
    export_file = Path(tmp_path) / "exports" / "matrix.jsonl"
    export_file.parent.mkdir()
    export_file.write_bytes(EXPORT_BYTES)
    export = DatasetSnapshot.objects.create(
        project=project, purpose=SnapshotPurpose.EXPORT, format="raw", path="exports/matrix.jsonl",
        row_count=1, state=JobState.SUCCEEDED, sha256="0" * 64, created_by=users["lead"],
    )
    round_ = Round.objects.create(project=project, number=1, state=RoundState.FAILED, error="boom")
    # A finished reliability fit, so its API has something to show to those who may read it.
    ReliabilityFit.objects.create(project=project, state=JobState.SUCCEEDED, labelers={users["labeler"].username: {"reliability": 1.0}})
    SamplingRun.objects.create(project=project)
    # The labeler's open dialogue, whose first turn failed: it can be redrawn or written again.
    dialogue = Dialogue.objects.create(project=project, labeler=users["labeler"])
    live_turn = LiveTurn.objects.create(
        dialogue=dialogue, turn_index=0, messages=[{"role": "user", "content": "hi"}], member_a=alpha, member_b=beta,
        left_is_a=True, state=JobState.FAILED, error="side a: boom",
    )
    tokens = {role: Token.objects.create(user=user).key for role, user in users.items()}

    admin_ids = {
        "auth.user": users["labeler"].pk, "auth.group": _group().pk, "authtoken.tokenproxy": users["labeler"].pk,
        "annotation.project": project.pk, "annotation.membership": project.memberships.first().pk,
        "annotation.prompt": labelled.prompt_id, "annotation.response": labelled.response_a_id,
        "annotation.comparison": labelled.pk, "annotation.assignment": assignment.pk,
        "annotation.judgment": judgment.pk, "annotation.datasetsnapshot": export.pk,
        "modeling.committeemember": alpha.pk, "modeling.round": round_.pk,
        "annotation.auditevent": AuditEvent.objects.latest("id").pk,  # the factories' roles granted
    }
    kwargs = {
        "slug": project.slug,
        "assignment_id": assignment.pk,
        "judgment_id": own.pk,
        "comparison_id": labelled.pk,
        "snapshot_id": export.pk,
        "round_id": round_.pk,
        "dialogue_id": dialogue.pk,
        "turn_id": live_turn.pk,
        "pk": alpha.pk,
        "member_id": alpha.pk,
        "id": users["labeler"].pk,
        "content_type_id": ContentType.objects.get_for_model(project).pk,
        "object_id": project.pk,
        "app_label": "annotation",
        "url": "no-such-page/",
        "username": users["labeler"].username,  # a labeler with a judgment in the project
    }
    # Bodies that pass validation, so what decides the answer is who asks, not what they send.
    bodies = {
        "api-submit": {"chosen": "left", "strength": "better"},
        "api-skip": {"reason": "unclear prompt"},
        "api-judgment-change": {"chosen": "right", "strength": "slightly_better"},
        "judgment-change": {"chosen": "right", "strength": "slightly_better"},
        "comparison-gold": {"winner": "a"},
        "project-new": {"name": "No slug"},
        "project-settings": {
            "name": "matrix", "overlap_k": "3", "gold_rate": "0.05", "repeat_rate": "0.03", "repeat_min_gap": "20",
            "lease_minutes": "30", "max_live_leases": "3",
            "margin_table": "small", "max_edit_chars": "20000", "verdict_change_minutes": "10", "pairing": "committee",
            "rejection_k": "4", "policy_admission": "always", "admission_min_labels": "30", "edit_step": "on", "ask_flags": "on",
            "prompt_source": "imported", "written_share": "0.25", "dialogue_max_turns": "4",
            "study_items": "20", "study_min_gold_accuracy": "0", "study_gold_after": "3",
            "candidates_k": "2", "selection_rule": "random", "selection_random_share": "0.2", "selection_prompt_cap": "2",
            "member_pair_rule": "weights", "suggestion_blind_share": "0.1",
        },
        "api-exports": {"format": "raw"},
        "api-dialogue": {"text": "Why is the sky blue?"},
        "api-dialogue-turns": {"text": "And at sunset?"},
        "member-list": {"name": "matrix-new-member", "kind": "local", "model_path": "/models/new"},
        "member-detail": {"name": MEMBER_NAMES[0], "kind": "local", "model_path": "/models/tiny", "weight": 2.0},
        "api-imports": Multipart({"format": "jsonl", "file": ("prompts.jsonl", b'{"prompt": "Why is the sky blue?"}\n')}),
        "quality-threshold": {"threshold": "0.5"},
        "committee-add": {"name": "matrix-incomplete", "kind": "endpoint"},
        "committee-member-settings": {"weight": "2", "temperature": "0.7", "top_p": "0.9", "max_new_tokens": "64"},
        "committee-member-active": {"active": "0"},
        "committee-member-test": {"prompt": "Say hello."},
        "project-member-weight": {"weight": "2"},
        "project-member-test": {"prompt": "Say hello."},
        "member-test": {"prompt": "Say hello."},
        "round-schedule": {"round_min_new_judgments": "10", "round_schedule_enabled": "on"},
    }
    return World(project=project, users=users, tokens=tokens, kwargs=kwargs, admin_ids=admin_ids, bodies=bodies)


@dataclass
class Multipart:
    fields: dict


def _member(project, role, username):
    user = UserFactory(username=username)
    MembershipFactory(project=project, user=user, role=role)
    return user


def _group():
    return Group.objects.create(name="matrix-group")


# --- Walking the URLconf ------------------------------------------------------------------------
@dataclass(frozen=True)
class Route:
    key: str  # "namespace:name", or the full pattern for the few unnamed admin routes
    pattern: str  # the full pattern, prefixes included
    callback: object
    default_kwargs: tuple

    @property
    def is_admin(self) -> bool:
        return self.pattern.startswith("admin/")

    @property
    def is_api(self) -> bool:
        return self.pattern.startswith("api/")


def all_routes() -> list[Route]:
    routes = []

    def walk(resolver, prefix, namespace):
        for entry in resolver.url_patterns:
            if isinstance(entry, URLResolver):
                inner = ":".join(n for n in (namespace, entry.namespace) if n)
                walk(entry, prefix + str(entry.pattern), inner)
            elif isinstance(entry, URLPattern):
                pattern = prefix + str(entry.pattern)
                key = f"{namespace}:{entry.name}" if namespace and entry.name else (entry.name or pattern)
                routes.append(Route(key, pattern, entry.callback, tuple(sorted(entry.default_args.items()))))

    walk(get_resolver(), "", "")
    return routes


_CONVERTER = re.compile(r"<(?:\w+:)?(\w+)>")
_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")


def build_url(route: Route, world: World) -> str:
    def value(match):
        name = match.group(1)
        if name == "object_id" and route.is_admin and _admin_model(route):
            return str(world.admin_ids[_admin_model(route)])
        return str(world.kwargs[name])

    path = _CONVERTER.sub(value, _GROUP.sub(value, route.pattern)).replace("^", "").replace("$", "")
    url = "/" + path
    match = resolve(url)
    # The URL built for the route must lead back to that route, or the test checks the wrong view.
    assert match.func == route.callback and tuple(sorted(match.kwargs.items())) >= route.default_kwargs, (route, url)
    return url


def _admin_model(route: Route) -> str | None:
    parts = route.pattern.split("/")
    if len(parts) >= 3 and f"{parts[1]}.{parts[2]}" in ADMIN_MODELS:
        return f"{parts[1]}.{parts[2]}"
    return None


# --- Asking -------------------------------------------------------------------------------------
def ask(route: Route, world: World, role: str, method: str):
    """One request as ``role``: a token for the API (as API clients do), a session for pages."""
    client = Client(raise_request_exception=False)
    extra = {}
    if role != "anonymous":
        if route.pattern.startswith("api/v1/") or route.key == "api-schema":
            extra["HTTP_AUTHORIZATION"] = f"Token {world.tokens[role]}"
        else:
            client.force_login(world.users[role])
    url = build_url(route, world)
    if route.key in QUERIES:
        url += "?" + urlencode(QUERIES[route.key])
    body = world.bodies.get(route.key, {})
    if method in ("GET", "OPTIONS"):
        return client.generic(method, url, **extra)
    if isinstance(body, Multipart):
        files = {k: SimpleUploadedFile(*v) if isinstance(v, tuple) else v for k, v in body.fields.items()}
        return client.generic(method, url, encode_multipart(BOUNDARY, files), content_type=MULTIPART_CONTENT, **extra)
    if route.pattern.startswith("api/"):
        return client.generic(method, url, json.dumps(body), content_type="application/json", **extra)
    return client.generic(method, url, urlencode(body), content_type="application/x-www-form-urlencoded", **extra)


def outcome(response):
    if response.status_code == 302:
        location = response["Location"]
        if location.startswith("/admin/login/"):
            return ADMIN_LOGIN
        if location.startswith("/login/"):
            return LOGIN
    return response.status_code




# What only some roles may ever receive, searched for in every response body.
SEES_MEMBER_NAMES = {"lead", "project_admin", "staff", "superuser"}  # leaderboards; staff run the committee
SEES_JUDGMENTS = {"lead", "project_admin", "superuser"}
SEES_EXPORTS = {"lead", "project_admin", "superuser"}
SEES_ADMIN = {"staff", "superuser"}


def leaks(route: Route, role: str, response) -> list[str]:
    body = b"".join(response.streaming_content) if response.streaming else response.content
    found = []
    if role not in SEES_MEMBER_NAMES:
        found += [f"committee member {name!r}" for name in MEMBER_NAMES if name.encode() in body]
    if role not in SEES_JUDGMENTS and PEER_RATIONALE.encode() in body:
        found.append("another labeler's judgment")
    if role not in SEES_EXPORTS and (EXPORT_BYTES.strip() in body or "attachment" in response.get("Content-Disposition", "")):
        found.append("an export's file")
    # The admin's login form carries the site's header and nothing else of it.
    if role not in SEES_ADMIN and route.key != "admin:login" and ADMIN_MARKER.encode() in body:
        found.append("an admin page")
    return found


ALL_ROUTES = {**ROUTES, **ADMIN_ROUTES}
#: Query strings some routes are asked with, whatever the method.
QUERIES = {"study-join": {"PROLIFIC_PID": "matrix-participant", "STUDY_ID": "s1", "SESSION_ID": "x1"}}


def test_every_route_has_a_line_in_the_table():
    routes = {route.key for route in all_routes()}
    missing = sorted(routes - ALL_ROUTES.keys())
    assert not missing, f"routes nobody has decided access for (add them to ROUTES): {missing}"
    stale = sorted(ALL_ROUTES.keys() - routes)
    assert not stale, f"table lines for routes that no longer exist: {stale}"


def test_every_model_in_the_admin_was_reviewed():
    assert {model._meta.label_lower for model in admin.site._registry} == ADMIN_MODELS


def test_the_walk_finds_the_router_the_admin_and_the_schema():
    keys = {route.key for route in all_routes()}
    assert {"member-list", "member-detail", "admin:index", "admin:annotation_judgment_changelist", "api-schema", "api-docs"} <= keys
    assert len(keys) > 100


@pytest.mark.parametrize("route", all_routes(), ids=lambda route: route.key)
def test_each_role_gets_exactly_what_the_table_says(route, world):
    expected = ALL_ROUTES.get(route.key)
    if expected is None:
        pytest.fail(f"{route.key} has no line in the table")
    # Outside the admin, every method is asked, listed or not; in the admin, the listed ones.
    methods = tuple(expected) if route.is_admin else METHODS
    problems = []
    for method in methods:
        for role, want in zip(ROLES, expected.get(method, (None,) * len(ROLES)), strict=True):
            if want == SKIP:
                continue
            # Each request in a savepoint rolled back after it: every role meets the same world.
            with transaction.atomic():
                response = ask(route, world, role, method)
                got, leaked = outcome(response), leaks(route, role, response)
                transaction.set_rollback(True)
            if want is None:
                ok = got in REFUSED and (role != "superuser" or got == 405)
                want = "refused (405 to a superuser)"
            else:
                ok = got == want
            if not ok:
                problems.append(f"{method} {role}: got {got}, table says {want}")
            if leaked:
                problems.append(f"{method} {role} received {', '.join(leaked)}")
    assert not problems, f"{route.key} ({route.pattern}):\n" + "\n".join(problems)
