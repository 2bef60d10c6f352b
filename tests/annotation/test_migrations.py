"""Data migrations: what they write from the rows that were there before."""

from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

BEFORE, AFTER = ("annotation", "0009_snapshot_resent_at"), ("annotation", "0010_labeler_day")


def migrate(*targets):
    """Migrate to each target in turn (one plan each: Django refuses a plan going both ways);
    returns the apps of the state they name together."""
    for target in targets:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate([target])
    return executor.loader.project_state(list(targets)).apps


def migrate_to_newest():
    """Every app back to its newest migration: moving annotation back also unapplies the modeling
    migrations that depend on it, and the tests after this one (transactional ones included,
    which keep the schema) need them all."""
    migrate(*MigrationExecutor(connection).loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_labeler_days_are_backfilled_from_the_judgments_already_submitted():
    apps = migrate(BEFORE)
    User = apps.get_model("auth", "User")
    models = {name: apps.get_model("annotation", name) for name in ("Project", "Prompt", "Response", "Comparison", "Assignment", "Judgment")}
    ada, importer = User.objects.create(username="ada"), User.objects.create(username="import:hh", is_active=False)
    now = timezone.now()
    yesterday = now - timedelta(days=1)

    def judged(project, n, by, at):
        for i in range(n):
            prompt = models["Prompt"].objects.create(project=project, messages=[], content_hash=f"{project.slug}-{by.pk}-{at:%j}-{i}")
            a, b = (models["Response"].objects.create(prompt=prompt, source="import", text=t) for t in ("a", "b"))
            comparison = models["Comparison"].objects.create(project=project, prompt=prompt, response_a=a, response_b=b)
            assignment = models["Assignment"].objects.create(
                comparison=comparison, labeler=by, left_response=a, state="submitted",
                leased_at=at - timedelta(minutes=1), expires_at=at + timedelta(minutes=9), ended_at=at,
            )
            models["Judgment"].objects.create(
                assignment=assignment, comparison=comparison, labeler=by, chosen_response=a, rejected_response=b,
                left_response=a, strength="better", leased_at=assignment.leased_at, submitted_at=at, time_on_task_ms=60_000,
            )

    one, two = (models["Project"].objects.create(name=s, slug=s) for s in ("one", "two"))
    judged(one, 3, ada, now), judged(one, 2, ada, yesterday), judged(two, 1, ada, now), judged(one, 4, importer, now)
    try:
        apps = migrate(AFTER)
        days = {
            (d.project.slug, d.day): d.judgments
            for d in apps.get_model("annotation", "LabelerDay").objects.select_related("project")
        }
        # The import account's judgments were imported, not submitted: no rows for it.
        assert days == {
            ("one", timezone.localdate(now)): 3, ("one", timezone.localdate(yesterday)): 2, ("two", timezone.localdate(now)): 1,
        }
    finally:
        # Back to the newest schema for the tests after this one (the rows go with the flush).
        migrate_to_newest()


@pytest.mark.django_db(transaction=True)
def test_a_rounds_cut_moves_from_its_metrics_to_its_column():
    # Both apps back: annotation's later columns (NOT NULL, no database default) would refuse the old model's rows.
    apps = migrate(("annotation", "0016_judgment_strength_unknown"), ("modeling", "0007_job_base"))
    Project, Round = apps.get_model("annotation", "Project"), apps.get_model("modeling", "Round")
    project = Project.objects.create(name="p", slug="p")
    snapshotted = Round.objects.create(project=project, number=1, state="succeeded", metrics={"snapshot": {"last_judgment_id": 41}})
    fresh = Round.objects.create(project=project, number=2, state="failed", metrics={})
    try:
        apps = migrate(("modeling", "0008_round_last_judgment_id"))
        Round = apps.get_model("modeling", "Round")
        assert Round.objects.get(pk=snapshotted.pk).last_judgment_id == 41
        assert Round.objects.get(pk=fresh.pk).last_judgment_id is None
    finally:
        migrate_to_newest()


@pytest.mark.django_db(transaction=True)
def test_imported_judgments_lose_the_strength_the_importer_invented():
    apps = migrate(("annotation", "0015_job_base"))
    User = apps.get_model("auth", "User")
    M = {name: apps.get_model("annotation", name) for name in ("Project", "Prompt", "Response", "Comparison", "Assignment", "Judgment")}
    project = M["Project"].objects.create(name="p", slug="p")
    now = timezone.now()
    for i, who in enumerate((User.objects.create(username="ada"), User.objects.create(username="import:hh-rlhf"))):
        prompt = M["Prompt"].objects.create(project=project, messages=[], content_hash=f"h{i}")
        a, b = (M["Response"].objects.create(prompt=prompt, source="import", text=t) for t in ("a", "b"))
        comparison = M["Comparison"].objects.create(project=project, prompt=prompt, response_a=a, response_b=b)
        assignment = M["Assignment"].objects.create(comparison=comparison, labeler=who, left_response=a, state="submitted",
                                                    leased_at=now, expires_at=now + timedelta(minutes=9), ended_at=now)
        M["Judgment"].objects.create(assignment=assignment, comparison=comparison, labeler=who, chosen_response=a,
                                     rejected_response=b, left_response=a, strength="better", leased_at=now, submitted_at=now,
                                     time_on_task_ms=0)
    try:
        apps = migrate(("annotation", "0016_judgment_strength_unknown"))
        strengths = dict(apps.get_model("annotation", "Judgment").objects.values_list("labeler__username", "strength"))
        assert strengths == {"ada": "better", "import:hh-rlhf": None}
    finally:
        migrate_to_newest()


@pytest.mark.django_db(transaction=True)
def test_the_tests_above_leave_every_migration_applied():
    """They move apps back and forth on the shared test database; the tests after them expect the
    newest schema in every app (a modeling table once went missing for every later test)."""
    executor = MigrationExecutor(connection)
    assert executor.migration_plan(executor.loader.graph.leaf_nodes()) == []
