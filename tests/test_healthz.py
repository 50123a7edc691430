"""GET /healthz reports database and broker reachability."""

import socket

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


def test_it_answers_503_when_the_broker_is_down(client, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{_closed_port()}/0"
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["broker"]["ok"] is False
    assert response.json()["database"]["ok"] is True


def test_it_answers_503_when_the_database_is_down(client, monkeypatch):
    from portal import views

    monkeypatch.setattr(views, "_database_ok", lambda: (False, "OperationalError"))
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["database"] == {"ok": False, "detail": "OperationalError"}


def test_it_refuses_post(client):
    assert client.post("/healthz").status_code == 405
