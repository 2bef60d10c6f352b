import gzip
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotation.importers import ImportValidationError, parse_hh, parse_mt_bench
from annotation.models import Project, Strength
from annotation.services import preference_pairs_import, prompts_create

MAX_BYTES = 200 * 1024 * 1024


class Command(BaseCommand):
    help = "Import prompts (MT-Bench questions) or pre-labelled comparisons (HH-RLHF) into a project. All or nothing."

    def add_arguments(self, parser):
        parser.add_argument("project", help="project slug")
        parser.add_argument("file", help="a .jsonl or .jsonl.gz file")
        parser.add_argument("--format", choices=["mt-bench", "hh"], required=True)
        parser.add_argument("--strength", choices=Strength.values, default=Strength.BETTER,
                            help="strength recorded for imported preferences (HH-RLHF has none)")

    def handle(self, *args, project, file, format, strength, **options):
        target = Project.objects.filter(slug=project).first()
        if target is None:
            raise CommandError(f"No project with slug {project!r}")
        path = Path(file)
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        if path.stat().st_size > MAX_BYTES:
            raise CommandError(f"{path} is larger than {MAX_BYTES // 2**20} MiB")
        opener = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rt", encoding="utf-8") as lines:
                if format == "mt-bench":
                    result = prompts_create(project=target, prompts=parse_mt_bench(lines))
                    self.stdout.write(f"{result.created} prompts imported, {result.duplicates} duplicates skipped.")
                    return
                pairs, skipped = parse_hh(lines)
        except ImportValidationError as exc:
            for error in exc.errors:
                self.stderr.write(str(error))
            raise CommandError(f"{exc.total} problem(s); nothing was imported") from None
        except UnicodeDecodeError as exc:
            raise CommandError(f"{path} is not UTF-8 text ({exc}); nothing was imported") from None
        result = preference_pairs_import(project=target, pairs=pairs, source="hh-rlhf", strength=strength)
        self.stdout.write(
            f"{result.comparisons_created} pre-labelled comparisons imported ({result.prompts_created} new prompts), "
            f"{result.duplicates} duplicates and {len(skipped)} unusable rows skipped."
        )
        for row in skipped[:20]:
            self.stdout.write(f"  skipped {row}")
