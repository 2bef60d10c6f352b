"""Retraining rounds: snapshot → reward model → DPO policy → evaluation → registration.

The Round row is the job (config/jobs.py). ``round_execute`` runs the steps not yet recorded in
``step_timings``, so a retried round resumes where it failed; every step writes its files into
a temporary folder and renames it into place last, so a half-written checkpoint is never read.
A heartbeat thread keeps ``heartbeat_at`` fresh while a step runs; the jobs' watchdog
(modeling/services/watchdog.py) fails rounds whose worker died and re-sends rounds whose message
was lost. Labels are only read here, never written.

- ``settings``: defaults, presets, the one schema of a round's settings;
- ``steps``: the steps and what they write;
- ``execution``: start, retry, cancel, run, and the scheduler.
"""

from modeling.services.rounds.execution import round_cancel, round_execute, round_retry, round_start, rounds_start_due
from modeling.services.rounds.settings import DEFAULT_CONFIG, PRESETS, ROUND_SETTINGS_SCHEMA, RoundConflict, RoundError
from modeling.services.rounds.steps import STEPS, StepProgress, round_dir, round_log, snapshot_filters

__all__ = [
    "DEFAULT_CONFIG", "PRESETS", "ROUND_SETTINGS_SCHEMA", "STEPS", "RoundConflict", "RoundError", "StepProgress", "round_cancel", "round_dir",
    "round_execute", "round_log", "round_retry", "round_start", "rounds_start_due", "snapshot_filters",
]
