"""Count every statement this process sends to PostgreSQL, at the driver (psycopg 3).

Django's ``CaptureQueriesContext`` sees only what goes through Django's cursor wrappers:
it misses raw ``psycopg.Cursor`` objects (``keys`` uses one for the bulk upsert), the
``SELECT 1`` of ``CONN_HEALTH_CHECKS`` (sent on a bare psycopg cursor), and the ``BEGIN`` /
``COMMIT`` / ``ROLLBACK`` psycopg sends itself when a transaction starts or ends. This
counter wraps the few places in psycopg where a message that runs SQL leaves for the
server, whatever created the cursor:

* ``BaseCursor._execute_send`` and ``ClientCursor._execute_send``: every ``execute``,
  each item of ``executemany``, ``stream`` and ``copy`` (Django's cursors, raw cursors and
  ``Connection.execute`` alike);
* ``BaseCursor._send_prepare`` and ``_send_query_prepared``: server-side prepared statements
  (a prepare is counted as a round trip of its own, marked ``PREPARE``);
* ``BaseConnection._exec_command``: the commands psycopg sends on its own, ``BEGIN`` when
  a transaction starts on a non-autocommit connection, ``COMMIT`` and ``ROLLBACK``.

So ``BEGIN`` and ``COMMIT`` count as statements, as they are round trips. Counting covers
every connection and thread of the process while the block runs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from psycopg import _connection_base, _cursor_base, client_cursor


@dataclass
class Statements:
    """What was sent, in order: SQL text (``bytes`` decoded) per statement."""

    sql: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, text: object) -> None:
        if isinstance(text, bytes | bytearray | memoryview):
            text = bytes(text).decode("utf-8", "replace")
        with self._lock:
            self.sql.append(str(text))

    def __len__(self) -> int:
        return len(self.sql)

    def __str__(self) -> str:
        return "\n".join(f"{i + 1}. {s}" for i, s in enumerate(self.sql)) or "(no statements)"


def _sql_of(query: object) -> object:
    return getattr(query, "query", query)


@contextmanager
def count_statements() -> Iterator[Statements]:
    """``with count_statements() as sent: …`` then ``len(sent)``; ``str(sent)`` lists them."""
    sent = Statements()
    base_send = _cursor_base.BaseCursor._execute_send
    client_send = client_cursor.ClientCursorMixin._execute_send
    prepare = _cursor_base.BaseCursor._send_prepare
    prepared = _cursor_base.BaseCursor._send_query_prepared
    command = _connection_base.BaseConnection._exec_command

    def counted_base_send(self, query, *args, **kwargs):
        sent.add(_sql_of(query))
        return base_send(self, query, *args, **kwargs)

    def counted_client_send(self, query, *args, **kwargs):
        sent.add(_sql_of(query))
        return client_send(self, query, *args, **kwargs)

    def counted_prepare(self, name, query, *args, **kwargs):
        sent.add(b"PREPARE " + bytes(_sql_of(query)))
        return prepare(self, name, query, *args, **kwargs)

    def counted_prepared(self, name, query, *args, **kwargs):
        sent.add(_sql_of(query))
        return prepared(self, name, query, *args, **kwargs)

    def counted_command(self, cmd, *args, **kwargs):
        sent.add(cmd.as_string(self) if hasattr(cmd, "as_string") else cmd)
        return (yield from command(self, cmd, *args, **kwargs))

    patches = [
        (_cursor_base.BaseCursor, "_execute_send", counted_base_send),
        (client_cursor.ClientCursorMixin, "_execute_send", counted_client_send),
        (_cursor_base.BaseCursor, "_send_prepare", counted_prepare),
        (_cursor_base.BaseCursor, "_send_query_prepared", counted_prepared),
        (_connection_base.BaseConnection, "_exec_command", counted_command),
    ]
    originals = [(owner, name, owner.__dict__[name]) for owner, name, _ in patches]
    for owner, name, replacement in patches:
        setattr(owner, name, replacement)
    try:
        yield sent
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)
