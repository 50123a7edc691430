"""Round trips of the data plane to PostgreSQL (issue 12, item 1), counted at the driver by
tests/statements.py: every statement psycopg sends, from Django's cursors and raw ones,
including BEGIN / COMMIT and the connection health check's SELECT 1.

Steady state: the data key is cached, the API key's ``last_used_at`` is fresh (it is
written at most once a minute, an UPDATE of its own) and the connection has prepared the
data plane's statements (keys/services/rows.py: the first use of each on a connection
sends its PREPARE as a round trip of its own, once). Requests go through the production
entry point, ``portal.wsgi.application`` (so Django's request_started / request_finished
signals and the connection health check run as under gunicorn), and through the test
client for comparison; both must send the same statements."""

import io
import json
import sys

import pytest
from django.db import connection

from keys.models import KeyRegistration, Record
from portal import wsgi
from tests.statements import count_statements

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"data": "x" * 1000}


@pytest.fixture(autouse=True)
def postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("the counts are pinned on PostgreSQL, where production runs")


class Wsgi:
    """Requests through ``portal.wsgi.application``, as gunicorn makes them."""

    def __init__(self, base: str, api_key: str) -> None:
        self.base, self.api_key = base, api_key

    def __call__(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        environ = {
            "REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "HTTP_HOST": "127.0.0.1",
            "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr,
            "wsgi.url_scheme": "http", "wsgi.multithread": True, "wsgi.multiprocess": True, "wsgi.run_once": False,
            "HTTP_AUTHORIZATION": f"Bearer {self.api_key}", "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)),
        }
        status = []
        chunks = wsgi.application(environ, lambda s, h, e=None: status.append(int(s.split()[0])))
        try:
            data = b"".join(chunks)
        finally:
            getattr(chunks, "close", lambda: None)()  # fires request_finished, as a server does
        return status[0], data

    def get(self, key):
        return self("GET", f"{self.base}/{key}")

    def put(self, key, body=BODY):
        return self("PUT", f"{self.base}/{key}", json.dumps({"body": body}).encode())

    def delete(self, key):
        return self("DELETE", f"{self.base}/{key}")

    def post(self, what, payload):
        return self("POST", f"{self.base}/{what}", json.dumps(payload).encode())


@pytest.fixture
def persistent_connections(monkeypatch):
    """Connections kept between requests, as in production (CONN_MAX_AGE=60 by default;
    pyproject sets 0 for tests): each request would otherwise connect afresh."""
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 60)
    connection.close()
    yield
    connection.close()


@pytest.fixture
def server(api, api_key, persistent_connections):
    http = Wsgi(api.base, api_key)
    assert http.put("warm")[0] == 200  # loads the data key, writes last_used_at
    assert http.put("warm")[0] == 200  # the one-statement PUT, prepared
    assert http.get("warm")[0] == 200
    # Each statement prepared once on this connection.
    assert http.post("batch", {"records": [{"record_key": "scratch", "body": 1}]})[0] == 200
    assert http.post("find", {"record_keys": ["scratch"]})[0] == 200
    assert http.delete("scratch")[0] == 204
    return http


def kinds(sent) -> list[str]:
    return [s.split()[0].upper() for s in sent.sql]


def test_a_get_is_one_statement(server):
    with count_statements() as sent:
        status, data = server.get("warm")
    assert status == 200 and json.loads(data)["body"] == BODY
    assert len(sent) == 1, str(sent)
    assert kinds(sent) == ["SELECT"]


def test_a_get_of_a_missing_record_is_one_statement(server):
    with count_statements() as sent:
        status, _ = server.get("missing")
    assert status == 404
    assert len(sent) == 1, str(sent)


def test_a_put_is_one_statement_that_authenticates_and_writes(server):
    with count_statements() as sent:
        status, _ = server.put("new-one")
    with count_statements() as replaced:
        status_again, data = server.put("new-one", {"v": 2})
    assert status == status_again == 200
    assert kinds(sent) == ["WITH"] and kinds(replaced) == ["WITH"], str(sent)
    # The API key check and the active-version guard travel with the write.
    assert "INSERT" in sent.sql[0] and "key_hash" in sent.sql[0] and "FOR SHARE" in sent.sql[0]
    assert json.loads(data)["key_version"] == 1
    assert server.get("new-one")[1] and json.loads(server.get("new-one")[1])["body"] == {"v": 2}


def test_the_first_put_of_a_process_is_two_statements_with_no_transaction_around_them(server):
    """No version seen yet in this process (a fresh worker): the API key with the
    environment's active version, then the guarded upsert."""
    from keys.services import records

    records.active_seen_clear()
    with count_statements() as sent:
        status, _ = server.put("first")
    with count_statements() as then:
        server.put("first")
    assert status == 200
    assert kinds(sent) == ["SELECT", "INSERT"], str(sent)
    assert "FOR SHARE" in sent.sql[1]
    assert kinds(then) == ["WITH"], str(then)


def test_a_delete_is_one_statement_that_authenticates_and_deletes(server):
    with count_statements() as sent:
        status, _ = server.delete("warm")
    assert status == 204
    assert kinds(sent) == ["WITH"], str(sent)
    assert "DELETE" in sent.sql[0] and "key_hash" in sent.sql[0]
    assert not Record.objects.filter(record_key="warm").exists()


def test_a_delete_of_a_missing_record_is_one_statement(server):
    with count_statements() as sent:
        status, _ = server.delete("never-written")
    assert status == 404
    assert len(sent) == 1, str(sent)


@pytest.mark.parametrize("n", [1, 10, 999])
def test_a_batch_and_a_find_are_two_statements_whatever_their_size(server, n):
    keys = [f"b-{i}" for i in range(n)]
    with count_statements() as written:
        status, _ = server.post("batch", {"records": [{"record_key": k, "body": BODY} for k in keys]})
    with count_statements() as found:
        status_find, data = server.post("find", {"record_keys": keys + ["missing"]})
    assert status == status_find == 200
    assert len(json.loads(data)["records"]) == n
    assert len(written) == 2 and kinds(written) == ["SELECT", "INSERT"], str(written)
    assert len(found) == 2 and kinds(found) == ["SELECT", "SELECT"], str(found)


def test_the_test_client_sends_the_same_statements(api, server):
    with count_statements() as sent:
        api.get("warm")
        api.put("warm", {"body": 1})
    assert kinds(sent) == ["SELECT", "WITH"], str(sent)


def test_a_put_that_loses_the_rotation_race_looks_again_and_writes_under_the_new_version(
    server, environment, monkeypatch
):
    """GIVEN the API key query saw version 1 active
    WHEN another version is activated before the write
    THEN the guarded write matches nothing, the active version is looked up afresh and the
    record is stored under the new version, never under the one that stopped being active."""
    from keys.services import api_keys, records
    from tests.factories import new_managed_version

    original = api_keys.api_key_authenticate

    def then_rotate(**kwargs):
        row = original(**kwargs)
        if kwargs.get("with_active_version"):
            new_managed_version(environment)
        return row

    monkeypatch.setattr(api_keys, "api_key_authenticate", then_rotate)
    records.active_seen_clear()  # the usual path: no version seen yet
    with count_statements() as sent:
        status, data = server.put("raced")
    monkeypatch.undo()

    assert status == 200 and json.loads(data)["key_version"] == 2
    assert Record.objects.get(record_key="raced").registration.version == 2
    assert KeyRegistration.objects.get(environment=environment, version=1).status == "decrypt_only"
    inserts = [s for s in sent.sql if s.upper().startswith("INSERT INTO \"KEYS_RECORD\"")]
    assert len(inserts) == 2  # the first matched no active version; the retry did


def test_a_one_statement_put_that_loses_the_rotation_race_writes_nothing_then_writes_under_the_new_version(
    server, environment, monkeypatch
):
    """GIVEN this process last wrote under version 1 (its data key cached)
    WHEN version 2 is activated after the PUT encrypted under version 1, before its statement
    THEN the statement's guard writes nothing, and the usual path stores the record under
    version 2; no record is ever stored under version 1 after it stopped being active."""
    from keys.services import api_keys
    from tests.factories import new_managed_version

    original = api_keys.api_key_authenticate_changing

    def rotate_then(**kwargs):
        new_managed_version(environment)
        return original(**kwargs)

    monkeypatch.setattr(api_keys, "api_key_authenticate_changing", rotate_then)
    with count_statements() as sent:
        status, data = server.put("raced")
    monkeypatch.undo()

    assert status == 200 and json.loads(data)["key_version"] == 2
    assert Record.objects.get(record_key="raced").registration.version == 2
    # After the rotation: the one statement (nothing written), then the usual path (the API
    # key with the active version, version 2's data key loaded, the guarded upsert).
    after = kinds(sent)[kinds(sent).index("WITH"):]
    assert after[:2] == ["WITH", "SELECT"] and after[-1] == "INSERT" and after.count("INSERT") == 1, str(sent)
    with count_statements() as next_put:
        assert json.loads(server.put("after")[1])["key_version"] == 2
    assert kinds(next_put) == ["WITH"]  # version 2 is the one remembered now


def test_a_one_statement_put_with_a_wrong_secret_a_revoked_key_or_another_environments_key_writes_nothing(
    server, api_key, environment, alice
):
    from environments.services import environment_create
    from keys.models import ApiKey
    from keys.services import api_keys

    scheme, prefix, secret = api_key.split("_", 2)
    wrong = Wsgi(server.base, f"{scheme}_{prefix}_{'A' * len(secret)}")
    status, data = wrong.put("nope")
    assert status == 401 and json.loads(data)["error"]["code"] == "invalid_api_key"

    other = environment_create(organization=environment.organization, name="other", actor=alice)
    _, other_key = api_keys.api_key_create(environment=other, name="other", actor=alice)
    status, data = Wsgi(server.base, other_key).put("nope")  # the path names this environment
    assert status == 404

    api_keys.api_key_revoke(api_key=ApiKey.objects.get(prefix=prefix), actor=alice)
    with count_statements() as sent:
        status, data = server.put("nope")
    assert status == 401 and json.loads(data)["error"]["code"] == "api_key_revoked"
    assert kinds(sent) == ["WITH"]  # the one-statement path ran, and its guard held
    assert not Record.objects.filter(record_key="nope").exists()


def test_a_delete_with_another_environments_id_deletes_nothing(server, environment, alice):
    from environments.services import environment_create

    other = environment_create(organization=environment.organization, name="other", actor=alice)
    path = f"/api/v1/environments/{other.public_id}/records/warm"

    with count_statements() as sent:
        status, _ = server("DELETE", path)

    assert status == 404 and len(sent) == 1
    assert Record.objects.filter(record_key="warm").exists()


def test_a_delete_with_a_revoked_key_deletes_nothing(server, api_key, alice):
    from keys.models import ApiKey
    from keys.services import api_keys

    api_keys.api_key_revoke(api_key=ApiKey.objects.get(prefix=api_key.split("_")[1]), actor=alice)

    status, data = server.delete("warm")

    assert status == 401 and json.loads(data)["error"]["code"] == "api_key_revoked"
    assert Record.objects.filter(record_key="warm").exists()
