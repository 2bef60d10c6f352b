import json
import shutil
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from annotation.exports import FORMATS, ExportError
from annotation.models import JobState, Project
from annotation.services.exports import FILE_FORMATS, export_execute, export_start


class Command(BaseCommand):
    help = "Export a project's judgments (trl-preference, kto, sft, hh, raw, ...), recorded as a dataset snapshot."

    def add_arguments(self, parser):
        parser.add_argument("project", help="project slug")
        parser.add_argument("--format", choices=FORMATS, default="trl-preference")
        parser.add_argument("--filters", default="{}", help='JSON, e.g. \'{"negligible": "exclude", "aggregation": "majority"}\'')
        parser.add_argument("--file-format", choices=FILE_FORMATS, help="jsonl (default), parquet, or csv for spreadsheets")
        parser.add_argument("--out", help="also copy the file here")

    def handle(self, *args, project, format, filters, file_format, out, **options):
        target = Project.objects.filter(slug=project).first()
        if target is None:
            raise CommandError(f"No project with slug {project!r}")
        try:
            snapshot = export_start(project=target, format=format, filters=json.loads(filters), file_format=file_format)
        except (ExportError, json.JSONDecodeError) as exc:
            raise CommandError(str(exc)) from None
        snapshot = export_execute(snapshot_id=snapshot.pk)  # the queued task will find it done
        if snapshot.state != JobState.SUCCEEDED:
            raise CommandError(snapshot.error)
        path = Path(settings.ARTIFACTS_DIR) / snapshot.path
        if out:
            shutil.copyfile(path, out)
        self.stdout.write(f"{snapshot.row_count} rows, sha256 {snapshot.sha256}: {out or path}")

