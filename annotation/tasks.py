"""Celery tasks of the annotation app: thin wrappers that take ids and call a service."""

from celery import shared_task

from annotation import services


@shared_task(acks_late=True)  # idempotent: a conditional UPDATE of leases already past expiry
def assignments_expire() -> int:
    return services.assignments_expire()


@shared_task(acks_late=True)  # idempotent: a finished export is left alone, a dead one rewritten
def export_run(snapshot_id: int) -> dict:
    from annotation.services.exports import export_execute

    snapshot = export_execute(snapshot_id=snapshot_id)
    return {"id": snapshot.pk, "state": snapshot.state, "rows": snapshot.row_count, "sha256": snapshot.sha256}


@shared_task(acks_late=True)  # idempotent: job_claim lets one delivery run the fit
def reliability_fit(fit_id: int) -> dict:
    from annotation.services.reliability import reliability_fit_execute

    fit = reliability_fit_execute(fit_id=fit_id)
    return {"id": fit.pk, "state": fit.state, "judgments": fit.judgments}
