from django.apps import AppConfig


class KeysConfig(AppConfig):
    name = "keys"
    verbose_name = "Keys and records"

    def ready(self) -> None:
        from keys import system_checks  # noqa: F401  (registers system checks keys.E001…)
