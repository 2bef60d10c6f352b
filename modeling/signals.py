"""Audit-log receivers for committee members, however they change: the API, the Django admin, a
round's new policy joining the committee."""

from __future__ import annotations

from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver

from annotation.models import AuditAction
from annotation.services.audit import audit_record
from modeling.models import CommitteeMember

AUDITED_FIELDS = ("name", "kind", "model_path", "gguf_package", "gguf_file", "base_url", "endpoint_model", "api_key_env", "generation", "weight")


@receiver(pre_save, sender=CommitteeMember)
def _remember_member(sender, instance: CommitteeMember, **kwargs):
    instance._before = (
        CommitteeMember.objects.filter(pk=instance.pk).values("is_active", *AUDITED_FIELDS).first() if instance.pk else None
    )


@receiver(post_save, sender=CommitteeMember)
def _member_saved(sender, instance: CommitteeMember, created: bool, raw=False, **kwargs):
    if raw:
        return
    before = getattr(instance, "_before", None)
    project = instance.source_round.project if instance.source_round_id else None
    if created or before is None:
        details = {"kind": instance.kind, "round": instance.source_round_id}
        audit_record(action=AuditAction.MEMBER_ADDED, project=project, target=instance.name, details=details)
        return
    if before["is_active"] != instance.is_active:
        action = AuditAction.MEMBER_REACTIVATED if instance.is_active else AuditAction.MEMBER_RETIRED
        audit_record(action=action, project=project, target=instance.name)
    changed = {f: {"from": before[f], "to": getattr(instance, f)} for f in AUDITED_FIELDS if before[f] != getattr(instance, f)}
    if changed:
        audit_record(action=AuditAction.MEMBER_CHANGED, project=project, target=instance.name, details=changed)


@receiver(post_delete, sender=CommitteeMember)
def _member_deleted(sender, instance: CommitteeMember, **kwargs):
    audit_record(action=AuditAction.MEMBER_DELETED, target=instance.name, details={"kind": instance.kind})
