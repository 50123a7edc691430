from django.apps import AppConfig


class KeysConfig(AppConfig):
    name = "keys"
    verbose_name = "Keys and records"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers system checks keys.E001…)
