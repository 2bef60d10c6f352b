"""The demo project and users for the embedded mode: MT-Bench prompts, one user per role, SmolLM2.

Idempotent: running it again changes nothing and reports what already existed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from annotation.importers import parse_mt_bench
from annotation.models import Project, Role
from annotation.services import membership_set, project_create, prompts_create
from modeling.models import SamplingRun
from modeling.services import member_register_smollm2, sampling_start

DEMO_SLUG = "mt-bench-demo"
DEMO_PASSWORD = "arbiter-demo"
DEMO_USERS = (
    ("admin", Role.ADMIN),
    ("lead", Role.LEAD),
    ("labeler1", Role.LABELER),
    ("labeler2", Role.LABELER),
    ("labeler3", Role.LABELER),
)
GUIDELINES = """\
## What you are judging
Pick the response a careful, knowledgeable user would rather receive, then say **how much** better it is.

- **Significantly better**: clearly better on what matters (correct where the other is wrong, answers the question the other misses).
- **Better**: better, with real but smaller differences.
- **Slightly better**: a little better; you could see someone disagreeing.
- **Negligibly better / unsure**: about equal, or you cannot tell.

Correctness and safety come before style. Do not reward length for its own sake.

## Then improve the winner
Fix what is wrong in the chosen response: errors, missing steps, tone. If it needs nothing, say "no edit needed".
"""


@dataclass
class DemoResult:
    project: Project
    prompts_created: int
    users_created: list[str]
    first_pass: SamplingRun | None = None


def mt_bench_path() -> Path:
    """``../shared/data`` when it is beside the checkout, else the copy shipped with the code."""
    shared = Path(settings.SHARED_DATA_DIR) / "mt-bench-questions.jsonl"
    if shared.exists():
        return shared
    return Path(__file__).resolve().parent / "fixtures" / "mt-bench-questions.jsonl"


@transaction.atomic
def demo_load() -> DemoResult:
    project = Project.objects.filter(slug=DEMO_SLUG).first()
    if project is None:
        project = project_create(
            name="MT-Bench demo",
            slug=DEMO_SLUG,
            description="80 MT-Bench questions answered by the committee (SmolLM2 by default).",
            guidelines=GUIDELINES,
        )
    with mt_bench_path().open(encoding="utf-8") as lines:
        result = prompts_create(project=project, prompts=parse_mt_bench(lines))

    User = get_user_model()
    created = []
    for username, role in DEMO_USERS:
        user = User.objects.filter(username=username).first()
        if user is None:
            user = User(username=username, email=f"{username}@arbiter.local")
            user.set_password(DEMO_PASSWORD)
            if role == Role.ADMIN:
                user.is_staff = user.is_superuser = True
            user.save()
            created.append(username)
        membership_set(project=project, user=user, role=role)
    member_register_smollm2()
    return DemoResult(project=project, prompts_created=result.created, users_created=created, first_pass=_first_pass(project))


def _first_pass(project: Project) -> SamplingRun | None:
    """A first sampling pass on a fresh demo, so a labeler has work within a minute of the first
    start instead of an empty queue until a lead finds the sampling form. Its first batch is small
    (a quarter of a batch) and released as soon as it is answered. Never twice: not once the
    project has had any pass or comparison."""
    prompts = settings.ARBITER_DEMO_FIRST_PASS
    if not prompts or SamplingRun.objects.filter(project=project).exists() or project.comparisons.exists():
        return None
    return sampling_start(project=project, limit=prompts)
