"""``manage.py seed_demo`` (run by ``make run`` on every start) keeps the demo account signed
in: it sets the password only when it differs, since a new hash ends the user's sessions."""

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

pytestmark = pytest.mark.django_db


def test_running_it_again_keeps_the_demo_user_signed_in():
    call_command("seed_demo")
    client = Client()
    client.force_login(get_user_model().objects.get(username="demo"))  # keys the session on the hash
    assert client.get("/").status_code == 200

    call_command("seed_demo")

    response = client.get("/")
    assert response.status_code == 200, "signed out by seed_demo"


def test_it_still_resets_a_changed_password():
    call_command("seed_demo")
    user = get_user_model().objects.get(username="demo")
    user.set_password("something-else-1")
    user.save()

    call_command("seed_demo")

    user.refresh_from_db()
    assert user.check_password("demo-password-1")
