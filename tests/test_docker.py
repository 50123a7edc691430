"""The docker/ files, checked by reading them (no Docker engine on the development machines)."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
SETTINGS_SOURCE = (ROOT / "portal" / "settings.py").read_text()


def _settings_variables() -> set[str]:
    """Every variable name settings.py reads through env.<type>("NAME") or _required("NAME")."""
    return set(re.findall(r'(?:env(?:\.\w+)?|_required)\(\s*"([A-Z0-9_]+)"', SETTINGS_SOURCE))


def _env_example_variables() -> set[str]:
    text = (ROOT / "docker" / ".env.example").read_text()
    return {line.split("=", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_it_has_the_five_services_each_with_a_healthcheck():
    services = COMPOSE["services"]
    assert set(services) == {"web", "worker", "beat", "postgres", "redis"}
    for name, service in services.items():
        assert "healthcheck" in service and service["healthcheck"]["test"], name


def test_it_starts_the_right_command_in_each_service():
    services = COMPOSE["services"]
    assert "gunicorn portal.wsgi:application" in " ".join(services["web"]["command"])
    assert services["worker"]["command"][:4] == ["celery", "-A", "portal", "worker"]
    assert services["beat"]["command"][:4] == ["celery", "-A", "portal", "beat"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")


def test_it_only_sets_variables_the_settings_read():
    read = _settings_variables()
    for name in ("web", "worker", "beat"):
        for variable in COMPOSE["services"][name].get("environment", {}):
            assert variable in read, f"{name} sets {variable}, which portal/settings.py never reads"


def test_it_lists_every_settings_variable_in_env_example():
    listed = _env_example_variables()
    missing = _settings_variables() - listed
    assert not missing, f"docker/.env.example lacks {sorted(missing)}"
    # Every listed variable is either read by settings or used by the compose file itself.
    extra = listed - _settings_variables() - {"POSTGRES_PASSWORD"}
    assert not extra, f"docker/.env.example lists {sorted(extra)}, which nothing reads"


def test_it_comments_every_variable_in_env_example():
    lines = (ROOT / "docker" / ".env.example").read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert lines[i - 1].startswith("#"), f"{line.split('=')[0]} has no comment line above it"


def test_it_runs_gunicorn_in_the_dockerfile():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(r'^CMD \["gunicorn", "portal\.wsgi:application"', dockerfile, re.M)
    assert "USER portal" in dockerfile
