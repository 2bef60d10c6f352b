"""The audit log: one row per change to data or models that someone may later ask about."""

from __future__ import annotations

from annotation.models import AuditAction, AuditEvent, Project


def audit_record(*, action: AuditAction, target: str, project: Project | None = None, actor=None, details: dict | None = None) -> AuditEvent:
    """Record ``action`` on ``target``. ``actor`` defaults to the user of the request being
    handled (``config.observability.current_user``); with neither, the actor is ``system``
    (the beat scheduler, a worker, a management command)."""
    from config.observability import current_user, request_id

    actor = actor if actor is not None and actor.is_authenticated else current_user()
    rid = request_id()
    return AuditEvent.objects.create(
        actor=actor,
        actor_name=actor.get_username() if actor is not None else "system",
        action=action,
        project=project,
        target=target[:200],
        details=details or {},
        request_id="" if rid == "-" else rid,
    )
