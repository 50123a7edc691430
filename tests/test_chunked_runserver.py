"""A chunked request body under the development server (``make run``: Django's runserver,
wsgiref, which does not de-chunk) is answered 411 ``length_required``, never read as an
empty body and answered "not valid JSON"; under a server that de-chunks (gunicorn, which
says so with ``wsgi.input_terminated``) it is read (tests/test_outages.py)."""

from __future__ import annotations

import io
import json
import socket
from urllib.parse import urlsplit

import pytest

from keys.models import Record
from tests.factories import error_of

LENGTH_REQUIRED = {"code": "length_required", "message": "This server cannot read a chunked body; send Content-Length."}


def chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "where,body",
    [
        ("r1", {"body": {"chunked": True}}),
        ("batch", {"records": [{"record_key": "r1", "body": 1}]}),
        ("find", {"record_keys": ["r1"]}),
    ],
)
def test_it_answers_411_for_a_chunked_body_the_server_did_not_de_chunk(api, environment, where, body):
    # What wsgiref (runserver) hands over: Transfer-Encoding, no Content-Length, a stream
    # that reads as empty, no wsgi.input_terminated.
    undechunked = {"CONTENT_LENGTH": "", "HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input": io.BytesIO(b"")}
    data = json.dumps(body)

    response = api.put(where, data, **undechunked) if where == "r1" else api.post(where, data, **undechunked)

    assert response.status_code == 411, response.content
    assert error_of(response) == LENGTH_REQUIRED
    assert not Record.objects.filter(environment=environment).exists()


@pytest.mark.django_db
def test_it_still_reads_a_body_with_content_length_and_a_transfer_encoding_header(api):
    """A Content-Length the server set (a proxy that de-chunked and kept the header) wins."""
    response = api.put("r1", {"body": 1}, HTTP_TRANSFER_ENCODING="chunked")

    assert response.status_code == 200, response.content


def _exchange(url: str, request: bytes) -> tuple[bytes, bytes]:
    """Send ``request`` on one connection; return the first answer's head and everything
    the server sent until it closed the connection (or stopped answering)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            pass
    head, _, rest = received.partition(b"\r\n\r\n")
    return head, rest


@pytest.mark.django_db(transaction=True)
def test_the_development_server_answers_411_to_a_chunked_put_and_closes_the_connection(
    live_server, environment, api_key
):
    """GIVEN Django's development server (live_server runs runserver's WSGIServer and
    request handler) WHEN a PUT comes with Transfer-Encoding: chunked and no Content-Length
    THEN 411 length_required, nothing stored, and the connection is closed, so the unread
    chunks are never taken for a next request."""
    path = f"/api/v1/environments/{environment.public_id}/records/r1"
    body = json.dumps({"body": {"chunked": True}}).encode()
    host = urlsplit(live_server.url).netloc.encode()

    head, rest = _exchange(
        live_server.url,
        b"PUT " + path.encode() + b" HTTP/1.1\r\nHost: " + host + b"\r\nAuthorization: Bearer " + api_key.encode()
        + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(body),
    )

    assert head.startswith(b"HTTP/1.1 411 "), head
    assert b"\r\nConnection: close" in head
    assert json.loads(rest)["error"] == LENGTH_REQUIRED
    assert not Record.objects.exists()

    head, rest = _exchange(
        live_server.url,
        b"PUT " + path.encode() + b" HTTP/1.1\r\nHost: " + host + b"\r\nAuthorization: Bearer " + api_key.encode()
        + b"\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body,
    )
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert Record.objects.count() == 1
