from django.core.management.base import BaseCommand, CommandError

from annotation.models import Project
from modeling.models import JudgeRun
from modeling.services import JudgeError, judge_execute, judge_start


class Command(BaseCommand):
    help = "Have the project's judge give its verdict, in both orders, on the comparisons it has not judged (queued to its worker, or --wait)."

    def add_arguments(self, parser):
        parser.add_argument("project", help="project slug")
        parser.add_argument("--limit", type=int, help="at most this many comparisons, oldest first")
        parser.add_argument("--wait", action="store_true", help="run here, now, instead of on a worker")

    def handle(self, *args, project, limit, wait, **options):
        target = Project.objects.filter(slug=project).first()
        if target is None:
            raise CommandError(f"No project with slug {project!r}")
        try:
            run = judge_start(project=target, limit=limit)
        except JudgeError as exc:
            raise CommandError(str(exc)) from None
        if wait:  # the row is queued and its message sent; whichever claims it first runs it
            run = judge_execute(run_id=run.pk)
        run = JudgeRun.objects.get(pk=run.pk)
        self.stdout.write(
            f"Judge run #{run.pk} ({run.member.name}) {run.state}: {run.comparisons_done}/{run.comparisons_total} comparisons, "
            f"{run.consistent} consistent, {run.inconsistent} ambiguous, {run.failed} without a usable verdict"
        )
        if run.error:
            raise CommandError(run.error)
