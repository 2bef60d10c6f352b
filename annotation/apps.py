from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AnnotationConfig(AppConfig):
    name = "annotation"
    verbose_name = "Annotation"

    def ready(self):
        from annotation import signals  # noqa: F401  (audit-log receivers)

        post_migrate.connect(_create_cache_table, sender=self)


def _create_cache_table(using, **kwargs):
    """The database cache's table (settings.CACHES) with every ``migrate``: it is not a model, so
    no migration makes it, and the login throttle needs it from the first request."""
    from django.core.management import call_command

    call_command("createcachetable", database=using, verbosity=0)
