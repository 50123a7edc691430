"""The records table leaves room on each page for a rewritten record (migration 0012:
fillfactor 80 on PostgreSQL), so a PUT or batch that replaces a record is a HOT update."""

import importlib

import pytest
from django.apps import apps
from django.db import connection

from keys.models import Record

pytestmark = pytest.mark.django_db

migration = importlib.import_module("keys.migrations.0012_record_fillfactor")


def reloptions() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = %s", [Record._meta.db_table])
        return list(cursor.fetchone()[0] or [])


@pytest.fixture(autouse=True)
def postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("fillfactor is a PostgreSQL storage parameter")


def test_the_records_table_is_filled_to_80_percent():
    assert reloptions() == ["fillfactor=80"]


def test_the_migration_goes_back_to_full_pages_and_forward_again():
    with connection.schema_editor() as editor:
        migration._set_fillfactor(100)(apps, editor)
        assert reloptions() == ["fillfactor=100"]
        migration._set_fillfactor(80)(apps, editor)
    assert reloptions() == ["fillfactor=80"]
