"""Audit-log receivers for changes made outside the services as well (the Django admin above all):
roles granted, changed and revoked. Committee members: ``modeling.signals``."""

from __future__ import annotations

from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver

from annotation.models import AuditAction, Membership
from annotation.services.audit import audit_record


@receiver(pre_save, sender=Membership)
def _remember_role(sender, instance: Membership, **kwargs):
    instance._role_before = (
        Membership.objects.filter(pk=instance.pk).values_list("role", flat=True).first() if instance.pk else None
    )


@receiver(post_save, sender=Membership)
def _role_saved(sender, instance: Membership, created: bool, raw=False, **kwargs):
    if raw:  # loaddata
        return
    before = getattr(instance, "_role_before", None)
    if created or before is None:
        action, details = AuditAction.ROLE_GRANTED, {"role": instance.role}
    elif before != instance.role:
        action, details = AuditAction.ROLE_CHANGED, {"from": before, "to": instance.role}
    else:
        return
    audit_record(action=action, project=instance.project, target=instance.user.get_username(), details=details)


@receiver(post_delete, sender=Membership)
def _role_deleted(sender, instance: Membership, **kwargs):
    audit_record(
        action=AuditAction.ROLE_REVOKED, project=instance.project, target=instance.user.get_username(),
        details={"role": instance.role},
    )
