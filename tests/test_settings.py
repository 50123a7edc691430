"""Settings read through django-environ: required variables, URL parsing."""

import os
import subprocess
import sys
from pathlib import Path

import environ

ROOT = Path(__file__).resolve().parent.parent


def _import_settings(**overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "ALLOWED_HOSTS", "SEALING_KEYS", "DEBUG"}}
    env.update(overrides)
    return subprocess.run(
        [sys.executable, "-c", "import portal.settings"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )


def test_it_refuses_to_start_without_secret_key_when_debug_is_off():
    result = _import_settings(DEBUG="false", ALLOWED_HOSTS="x.example", SEALING_KEYS="k1:" + "A" * 43 + "=")
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr


def test_it_refuses_to_start_without_allowed_hosts_when_debug_is_off():
    result = _import_settings(DEBUG="false", SECRET_KEY="s" * 50, SEALING_KEYS="k1:" + "A" * 43 + "=")
    assert result.returncode != 0
    assert "ALLOWED_HOSTS must be set when DEBUG is off" in result.stderr


def test_it_refuses_to_start_without_sealing_keys_when_debug_is_off():
    result = _import_settings(DEBUG="false", SECRET_KEY="s" * 50, ALLOWED_HOSTS="x.example")
    assert result.returncode != 0
    assert "SEALING_KEYS must be set when DEBUG is off" in result.stderr


def test_it_starts_with_every_required_variable_set():
    result = _import_settings(
        DEBUG="false", SECRET_KEY="s" * 50, ALLOWED_HOSTS="x.example", SEALING_KEYS="k1:" + "A" * 43 + "="
    )
    assert result.returncode == 0, result.stderr


def test_it_parses_percent_encoded_special_characters_in_the_database_password():
    env = environ.Env()
    password = "p#ss@w/rd+x"
    encoded = "p%23ss%40w%2Frd%2Bx"
    config = env.db_url_config(f"postgres://portal:{encoded}@db.example:5432/byok")
    assert config["PASSWORD"] == password
    assert (config["USER"], config["HOST"], config["PORT"], config["NAME"]) == ("portal", "db.example", 5432, "byok")


def test_it_uses_the_same_parser_as_settings_for_database_url(monkeypatch):
    # settings.DATABASES comes from env.db_url("DATABASE_URL"): same parser, read through the environment.
    monkeypatch.setenv("DATABASE_URL", "postgres://u:a%23b%40c%2Fd%2Be@h:5433/n")
    assert environ.Env().db_url("DATABASE_URL")["PASSWORD"] == "a#b@c/d+e"


def test_it_runs_the_test_suite_on_postgresql(settings):
    assert settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
