from django.core.management.base import BaseCommand, CommandError

from annotation.models import Project
from modeling.models import SamplingRun
from modeling.selectors import sampling_progress
from modeling.services import SamplingError, sampling_execute, sampling_start


class Command(BaseCommand):
    help = "Sample committee responses for a project's pending prompts (queued to the gpu worker, or --wait)."

    def add_arguments(self, parser):
        parser.add_argument("project", help="project slug")
        parser.add_argument("--mode", choices=SamplingRun.Mode.values, default=SamplingRun.Mode.COMMITTEE)
        parser.add_argument("--limit", type=int, help="at most this many pending prompts")
        parser.add_argument("--max-new-tokens", type=int, help="override the members' max_new_tokens")
        parser.add_argument("--batch-size", type=int, default=8)
        parser.add_argument("--wait", action="store_true", help="run here, now, instead of on a worker")

    def handle(self, *args, project, mode, limit, max_new_tokens, batch_size, wait, **options):
        target = Project.objects.filter(slug=project).first()
        if target is None:
            raise CommandError(f"No project with slug {project!r}")
        try:
            if wait:
                run = SamplingRun.objects.create(
                    project=target, mode=mode,
                    config={"limit": limit, "max_new_tokens": max_new_tokens, "batch_size": batch_size},
                )
                run = sampling_execute(run_id=run.pk)
            else:
                run = sampling_start(project=target, mode=mode, limit=limit, max_new_tokens=max_new_tokens, batch_size=batch_size)
        except SamplingError as exc:
            raise CommandError(str(exc)) from None
        p = sampling_progress(run=run)
        self.stdout.write(
            f"Sampling #{p['id']} {p['state']}: {p['prompts_done']}/{p['prompts_total']} prompts, "
            f"{p['responses_created']} responses, {p['pairs_created']} comparisons, "
            f"{p['pairs_near_duplicate']} near-duplicate pairs dropped, {p['responses_empty']} empty, "
            f"{p['responses_failed']} failed"
        )
        for member, error in p["member_errors"].items():
            self.stdout.write(f"  {member}: {error}")
        if p["error"]:
            raise CommandError(p["error"])
