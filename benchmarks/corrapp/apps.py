from django.apps import AppConfig


class CorrAppConfig(AppConfig):
    name = "benchmarks.corrapp"
    label = "corrapp"
    default_auto_field = "django.db.models.BigAutoField"
