from django.db import migrations, models

from annotation.migrations import _triggers


class Migration(migrations.Migration):
    dependencies = [("annotation", "0006_judgment_labeler_recent")]

    operations = [
        migrations.AddField(
            model_name="comparison",
            name="rendered",
            field=models.JSONField(blank=True, editable=False, null=True),
        ),
        # SQLite adds a nullable column in place today, but the rule for this table stands:
        # re-create the same-prompt trigger after altering it (idempotent).
        migrations.RunPython(_triggers.comparison_same_prompt, migrations.RunPython.noop),
    ]
