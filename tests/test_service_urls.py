"""Malformed DATABASE_URL / REDIS_URL / CELERY_BROKER_URL: a clear start-up error, no password in it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from portal.service_urls import check_service_url, url_problem

ROOT = Path(__file__).resolve().parent.parent
# Every piece of this password between its special characters is distinctive, so a message
# that quotes any part of it is caught.
PIECES = ("sekritQ7", "zzkp9X", "wq3mmZ", "Vvtt44", "pp0Rq8")
CANARY = "{}#{}@{}/{}?{}".format(*PIECES)


@pytest.mark.parametrize("url", [
    "postgres://postgres@127.0.0.1:5432/test",
    "postgres://byok:p%23ss%40w%2Frd%2B@db.internal:5432/byok?sslmode=require",
    "sqlite:////tmp/x/db.sqlite3",
    "redis://127.0.0.1:6379/1",
    "redis://:s%3Acret@[::1]:6379/0",
    "rediss://user:pa:ss@redis.example:6380/0",
    "memory://",
])
def test_it_accepts_well_formed_urls(url):
    assert url_problem(url) is None
    assert check_service_url("DATABASE_URL", url) == url


@pytest.mark.parametrize("url, words", [
    ("postgres://byok:pa#ss@db:5432/byok", "'#'"),
    ("postgres://byok:p@ss@db:5432/byok", "more than one '@'"),
    ("postgres://byok:pa/ss@db:5432/byok", "'@' follows the host"),
    ("redis://:pa?ss@redis:6379/0", "'@' follows the host"),
    ("postgres://byok:100%sure@db:5432/byok", "'%'"),
    ("postgres://byok:secret@db:port/byok", "port"),
    ("db.internal:5432/byok", "scheme"),
])
def test_it_names_what_is_wrong_with_a_malformed_url(url, words):
    problem = url_problem(url)
    assert problem is not None and words in problem


def test_it_raises_naming_the_variable_and_the_fix_without_the_password():
    with pytest.raises(ImproperlyConfigured) as raised:
        check_service_url("REDIS_URL", f"redis://:{CANARY}@redis:6379/0")
    message = str(raised.value)
    assert message.startswith("REDIS_URL is not a valid URL")
    assert "percent-encode" in message and "%23" in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    for piece in PIECES:
        assert piece not in message


@pytest.mark.parametrize("variable, url", [
    ("DATABASE_URL", f"postgres://byok:{CANARY}@127.0.0.1:5432/byok"),
    ("REDIS_URL", f"redis://:{CANARY}@127.0.0.1:6379/1"),
    ("CELERY_BROKER_URL", f"redis://:{CANARY}@127.0.0.1:6379/0"),
])
def test_manage_py_check_stops_naming_the_variable_and_prints_no_part_of_the_password(variable, url):
    environment = {**os.environ, "DEBUG": "true", variable: url}
    done = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert f"{variable} is not a valid URL" in done.stderr
    assert "percent-encode" in done.stderr
    for piece in PIECES:
        assert piece not in done.stderr and piece not in done.stdout, f"{piece!r} of the password was printed"
