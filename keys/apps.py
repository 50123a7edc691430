from django.apps import AppConfig


class KeysConfig(AppConfig):
    name = "keys"
    verbose_name = "Keys and records"

    def ready(self) -> None:
        # Imported for what importing them registers: the system checks (keys.E001…) and the
        # Celery tasks, which keys.queue finds by name in the app's task registry.
        from keys import system_checks, tasks  # noqa: F401
