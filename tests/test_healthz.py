"""GET /healthz reports database and broker reachability."""

import socket
import time

import pytest

pytestmark = pytest.mark.django_db


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_it_answers_200_when_database_and_eager_broker_are_fine(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["database"]["ok"] is True
    assert body["broker"]["ok"] is True


def test_it_answers_200_with_a_reachable_redis_broker(client, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/15"
    response = client.get("/healthz")
    assert response.status_code == 200, response.json()


def test_it_answers_200_degraded_when_only_the_broker_is_down(client, settings, caplog):
    """A broker outage must not take the web service out of a load balancer (or compose):
    pages and the data plane work without it. Said once per interval, not per probe."""
    from portal import outages

    outages.reset()
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{_closed_port()}/0"
    with caplog.at_level("WARNING", logger="portal.outages"):
        started = time.monotonic()
        responses = [client.get("/healthz") for _ in range(2)]
        waited = time.monotonic() - started
    assert waited < 2, waited  # a refused connection is known at once (kombu paused 2 s per probe)
    assert [r.status_code for r in responses] == [200, 200]
    assert responses[0].json()["status"] == "degraded"
    assert responses[0].json()["broker"]["ok"] is False
    assert responses[0].json()["database"]["ok"] is True
    assert [r.getMessage() for r in caplog.records if "broker unreachable" in r.getMessage()] == [
        "broker unreachable (OperationalError); validations cannot be queued (1 probe(s) since the last line)"
    ]


def test_it_answers_503_when_the_database_is_down(client, monkeypatch):
    from portal import views

    monkeypatch.setattr(views, "_database_ok", lambda: (False, "OperationalError"))
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["database"] == {"ok": False, "detail": "OperationalError"}


def test_it_refuses_post(client):
    assert client.post("/healthz").status_code == 405
