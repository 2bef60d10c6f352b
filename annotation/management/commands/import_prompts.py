from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotation.importers import ImportValidationError
from annotation.models import Project, Strength
from annotation.services.uploads import IMPORT_FORMATS, import_file, upload_too_large


class Command(BaseCommand):
    help = "Import prompts (JSONL, CSV, MT-Bench) or pre-labelled comparisons (HH-RLHF) into a project. All or nothing."

    def add_arguments(self, parser):
        parser.add_argument("project", help="project slug")
        parser.add_argument("file", help="the file (.gz is read compressed)")
        parser.add_argument("--format", choices=IMPORT_FORMATS, required=True)
        parser.add_argument("--strength", choices=Strength.values, default=Strength.BETTER,
                            help="strength recorded for imported preferences (HH-RLHF has none)")

    def handle(self, *args, project, file, format, strength, **options):
        target = Project.objects.filter(slug=project).first()
        if target is None:
            raise CommandError(f"No project with slug {project!r}")
        path = Path(file)
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        too_large = upload_too_large(size=path.stat().st_size)
        if too_large:
            raise CommandError(f"{path}: {too_large}")
        try:
            with path.open("rb") as stream:
                result = import_file(project=target, file=stream, name=path.name, format=format, strength=strength)
        except ImportValidationError as exc:
            for error in exc.errors:
                self.stderr.write(str(error))
            raise CommandError(f"{exc.total} problem(s); nothing was imported") from None
        if format == "hh":
            self.stdout.write(
                f"{result.comparisons_created} pre-labelled comparisons imported ({result.prompts_created} new prompts), "
                f"{result.duplicates} duplicates and {result.skipped_count} unusable rows skipped."
            )
        else:
            self.stdout.write(f"{result.prompts_created} prompts imported, {result.duplicates} duplicates skipped.")
        for row in result.skipped[:20]:
            self.stdout.write(f"  skipped {row}")
