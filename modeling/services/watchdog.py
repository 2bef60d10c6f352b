"""The jobs' watchdog: every kind of job (config/jobs.py) is checked the same way, each minute."""

from __future__ import annotations

from annotation.models import DatasetSnapshot, ReliabilityFit
from config.jobs import jobs_fail_stale, jobs_resend_lost
from modeling.models import JudgeRun, LiveTurn, MemberTest, Round, SamplingRun

#: Every model whose row is a job. A new job (an evaluation, a judge pass) joins this tuple.
JOB_MODELS = (Round, SamplingRun, DatasetSnapshot, MemberTest, LiveTurn, ReliabilityFit, JudgeRun)


def jobs_watchdog(*, now=None) -> dict:
    """Fail running jobs whose worker stopped beating and re-send queued jobs whose message was
    lost; returns, per kind of job, the ids of each. Safe to run anywhere, any number of times."""
    from modeling.services.rounds import round_log

    report = {}
    for model in JOB_MODELS:
        failed = jobs_fail_stale(model, now=now)
        if model is Round:
            for round_id in failed:
                round_log(round_id, "failed: worker lost (stale heartbeat)")
        report[model._meta.model_name] = {"failed_stale": failed, "resent": jobs_resend_lost(model, now=now)}
    return report
