import json

from django.core.management.base import BaseCommand, CommandError

from annotation.models import Project
from modeling.models import ACTIVE_ROUND_STATES
from modeling.services import RoundError, round_execute, round_start
from modeling.services.rounds import PRESETS


class Command(BaseCommand):
    help = "Start a retraining round for a project (queued to the gpu worker, or --wait to run it here)."

    def add_arguments(self, parser):
        parser.add_argument("project", help="project slug")
        parser.add_argument("--preset", choices=sorted(PRESETS), default="standard",
                            help="quick: minutes on a CPU (one epoch, at most 40 RM / 30 DPO steps); standard: at most 500 each")
        parser.add_argument("--config", default="{}", help='JSON overrides on the preset, e.g. \'{"rm": {"max_steps": 50}}\'')
        parser.add_argument("--wait", action="store_true", help="run the round in this process instead of a worker")

    def handle(self, *args, project, config, wait, preset, **options):
        target = Project.objects.filter(slug=project).first()
        if target is None:
            raise CommandError(f"No project with slug {project!r}")
        try:
            overrides = json.loads(config)
        except json.JSONDecodeError as exc:
            raise CommandError(f"--config is not JSON: {exc}") from None
        try:
            round_ = round_start(project=target, config=overrides, preset=preset)
        except RoundError as exc:
            raise CommandError(str(exc)) from None
        if not wait:
            self.stdout.write(f"Round {round_.number} of {target.slug} queued (id {round_.pk}).")
            return
        # The task sent on commit will find the round already claimed and do nothing.
        round_ = round_execute(round_id=round_.pk)
        if round_.state in ACTIVE_ROUND_STATES:
            self.stdout.write(f"Round {round_.number} was claimed by a running worker; follow it on the rounds page.")
            return
        self.stdout.write(round_.log)
        self.stdout.write(f"Round {round_.number}: {round_.state}")
        if round_.state != "succeeded":
            raise CommandError(round_.error or round_.state)
        rm = round_.metrics.get("training_rm", {}).get("heldout", {})
        evaluation = round_.metrics.get("evaluating", {})
        self.stdout.write(f"RM held-out accuracy: {rm.get('accuracy')} on {rm.get('pairs')} pairs; win rate: {evaluation.get('win_rate')}")
