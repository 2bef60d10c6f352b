"""Celery tasks of the annotation app: thin wrappers that take ids and call a service."""

from celery import shared_task

from annotation import services


@shared_task(acks_late=True)  # idempotent: a conditional UPDATE of leases already past expiry
def assignments_expire() -> int:
    return services.assignments_expire()
