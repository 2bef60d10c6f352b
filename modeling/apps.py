from django.apps import AppConfig


class ModelingConfig(AppConfig):
    name = "modeling"
    verbose_name = "Modeling"

    def ready(self):
        from modeling import live_worker, signals  # noqa: F401  (audit-log receivers; the live worker's heartbeat)
