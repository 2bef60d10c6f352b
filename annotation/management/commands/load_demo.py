from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from annotation.demo import DEMO_PASSWORD, DEMO_USERS, demo_load


class Command(BaseCommand):
    help = "Load the demo project (MT-Bench prompts), one demo user per role and the SmolLM2 member."

    def handle(self, *args, **options):
        if not settings.ARBITER_DEMO:
            raise CommandError("ARBITER_DEMO is off (always off in production): demo users have published passwords")
        result = demo_load()
        self.stdout.write(
            f"Demo project '{result.project.name}': {result.prompts_created} new prompts, "
            f"{result.project.prompts.count()} in all."
        )
        if result.first_pass is not None:
            self.stdout.write(
                f"Started a first sampling pass of {result.first_pass.config['limit']} prompts: labelers get comparisons "
                "as each batch is answered (ARBITER_DEMO_FIRST_PASS=0 turns this off)."
            )
        self.stdout.write(f"Demo users (password '{DEMO_PASSWORD}'):")
        for username, role in DEMO_USERS:
            self.stdout.write(f"  {username:<10} {role.label}")
