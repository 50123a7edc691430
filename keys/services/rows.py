"""Hand-written SQL for the data plane's hot queries, read into model instances.

The data plane's few hot queries are fixed in shape: only their parameters change from one
request to the next. Building them with the ORM compiles the same SQL again on every request
(``FilteredRelation`` + ``select_related`` across four tables cost about 2 ms of CPU per
request, ten times the round trip itself; profile in docs/architecture.md, "Speed of the
data plane"). Here the SQL is written once per shape (column lists from the models'
``_meta``, so a renamed column cannot drift) and each row is turned into model instances the
way the ORM does it: the database backend's converters and each field's ``from_db_value``
(JSON, and SQLite's dates and UUIDs), then ``Model.from_db``.

Only for queries whose shape never changes; everything else uses the ORM.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import psycopg
from django.db import DEFAULT_DB_ALIAS, connection, connections, models
from django.db.models.base import ModelState
from django.db.models.signals import post_init, pre_init

Converter = Callable[[Any, Any, Any], Any]
M = TypeVar("M", bound=models.Model)


class Columns(Generic[M]):
    """The concrete columns of ``model`` under the SQL alias ``alias``, in field order: all
    of them, or only the fields named in ``only`` (the primary key always), the others
    left deferred on the instances built, as ``QuerySet.only`` leaves them (reading one
    later costs a query of its own: for fields no hot path reads).

    ``sql`` is the select list (``alias."col", …``); :meth:`build` turns that many values of a
    row into an instance (``None`` when the primary key is NULL: an outer join that matched
    nothing)."""

    def __init__(self, model: type[M], alias: str, only: Sequence[str] = ()) -> None:
        self.model = model
        self.alias = alias
        wanted = {model._meta.get_field(name).attname for name in only}  # type: ignore[union-attr]
        self.fields = [
            f for f in model._meta.concrete_fields if not only or f.primary_key or f.attname in wanted
        ]
        self.attnames = [f.attname for f in self.fields]
        self.width = len(self.fields)
        q = connection.ops.quote_name
        self.sql = ", ".join(f"{alias}.{q(f.column)}" for f in self.fields)
        self._pk_index = self.fields.index(model._meta.pk)  # type: ignore[arg-type]
        self._converters: dict[str, list[tuple[int, list[Converter], Any]]] = {}
        self._plain: bool | None = None

    def column(self, name: str) -> str:
        """``alias."column"`` of the field ``name``."""
        field = self.model._meta.get_field(name)
        assert isinstance(field, models.Field) and field.column is not None
        return f"{self.alias}.{connection.ops.quote_name(field.column)}"

    def _converters_for(self, conn: Any) -> list[tuple[int, list[Converter], Any]]:
        found = self._converters.get(conn.vendor)
        if found is None:
            found = []
            for index, field in enumerate(self.fields):
                expression = field.get_col(self.alias)
                converters = conn.ops.get_db_converters(expression) + expression.get_db_converters(conn)
                if converters:
                    found.append((index, converters, expression))
            self._converters[conn.vendor] = found
        return found

    def build(self, row: Sequence[Any], start: int = 0, conn: Any = None) -> M | None:
        """An instance from ``row[start:start + width]`` as read through ``conn`` (a
        connection, not the ``django.db.connection`` proxy, whose every attribute is a
        look-up; default: the default connection)."""
        if conn is None:
            conn = connections[DEFAULT_DB_ALIAS]
        values = list(row[start:start + self.width])
        if values[self._pk_index] is None:
            return None
        for index, converters, expression in self._converters_for(conn):
            value = values[index]
            for converter in converters:
                value = converter(value, expression, conn)
            values[index] = value
        model = self.model
        if self._plain is None:
            # Asked once per shape: the receivers are connected when the apps load.
            self._plain = not (pre_init.has_listeners(model) or post_init.has_listeners(model))
        if not self._plain:
            return model.from_db(conn.alias, self.attnames, values)
        # What Model.from_db(…) ends with, without Model.__init__'s generic argument
        # handling (a third of a GET's row-building time): the same attributes, the same
        # state. Only for models no pre_init/post_init receiver wants to see.
        instance = model.__new__(model)
        state = instance._state = ModelState()
        state.adding, state.db = False, conn.alias
        instance.__dict__.update(zip(self.attnames, values, strict=True))
        return instance


def fetch(sql: str, params: Sequence[Any], *, many: bool = False) -> Any:
    """Run one hand-written statement on the default connection and return its first row
    (None if none) or, with ``many``, all its rows.

    PostgreSQL: a raw psycopg cursor, parameters bound server-side, and a prepared
    statement (``prepare=True``: parsed and planned once per connection, then only bound
    and executed; the first execution on a connection sends the PREPARE as a round trip of
    its own). Django turns psycopg's preparing off (``prepare_threshold=None``) for
    connection poolers in transaction mode (PgBouncer before 1.21);
    ``settings.DATA_PLANE_PREPARED_STATEMENTS`` (default on) turns it back on for the
    statements that ask for it (portal/settings.py), and off makes ``prepare=True`` a
    no-op. Other databases: Django's cursor. Database errors are Django's (``wrap_database_errors``), as from the
    ORM, so a broken connection is closed at the end of the request."""
    conn = connections[DEFAULT_DB_ALIAS]
    if conn.vendor != "postgresql":
        with conn.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if many else cursor.fetchone()
    conn.ensure_connection()
    with conn.wrap_database_errors, psycopg.Cursor(conn.connection) as cursor:
        cursor.execute(sql, params, prepare=True)
        return cursor.fetchall() if many else cursor.fetchone()


def execute(sql: str, params: Sequence[Any]) -> int:
    """Like :func:`fetch` for a statement whose rows are not wanted; returns the row count."""
    conn = connections[DEFAULT_DB_ALIAS]
    if conn.vendor != "postgresql":
        with conn.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.rowcount
    conn.ensure_connection()
    with conn.wrap_database_errors, psycopg.Cursor(conn.connection) as cursor:
        cursor.execute(sql, params, prepare=True)
        return cursor.rowcount
