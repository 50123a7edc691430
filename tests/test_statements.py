"""The statement counter (tests/statements.py) sees what the driver sends, whoever sends it."""

import psycopg
import pytest
from django.db import connection, transaction

from environments.models import Organization

from .statements import count_statements

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("the counts are pinned on PostgreSQL")


def test_it_counts_orm_queries_raw_cursors_and_transaction_commands():
    connection.ensure_connection()
    with count_statements() as sent:
        list(Organization.objects.filter(name="x"))
        with psycopg.Cursor(connection.connection) as cursor:
            cursor.execute("SELECT 2")
        with transaction.atomic():
            Organization.objects.create(name="counted")
    kinds = [s.split()[0].upper() for s in sent.sql]
    assert kinds == ["SELECT", "SELECT", "BEGIN", "INSERT", "COMMIT"], str(sent)


def test_it_counts_the_health_check_of_a_reused_connection(settings):
    connection.ensure_connection()
    connection.health_check_enabled = True
    connection.health_check_done = False
    with count_statements() as sent:
        list(Organization.objects.all())
    assert [s.strip() for s in sent.sql][:1] == ["SELECT 1"], str(sent)
    assert len(sent) == 2


def test_it_stops_counting_after_the_block():
    with count_statements() as sent:
        pass
    list(Organization.objects.all())
    assert len(sent) == 0
