"""Organizations: a signed-in user in no organization creates one (page, service, audit);
``manage.py create_owner`` creates the first user and organization of an installation."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.urls import reverse

from environments.models import Membership, Organization
from environments.services import OrganizationNameTaken, organization_create
from keys.models import AuditEvent
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def newcomer(make_user):
    return make_user("nora")


def test_it_offers_a_user_without_an_organization_to_create_one(client_for, newcomer):
    page = client_for(newcomer).get(reverse("home")).content.decode()
    assert "You are not a member of any organization yet." in page
    assert f'href="{reverse("organization_new")}"' in page


def test_it_sends_a_user_without_an_organization_from_new_environment_to_create_one(client_for, newcomer):
    response = client_for(newcomer).get(reverse("environment_new"))
    assert response.status_code == 302 and response["Location"] == reverse("organization_new")


def test_it_still_forbids_a_viewer_to_create_an_environment(client_for, bob):
    assert client_for(bob).get(reverse("environment_new")).status_code == 403


def test_it_creates_the_organization_with_its_creator_as_owner_and_audits_it(client_for, newcomer):
    client = client_for(newcomer)
    response = client.post(reverse("organization_new"), {"name": "  Nora's Shop  "})

    assert response.status_code == 302 and response["Location"] == reverse("home")
    organization = Organization.objects.get(name="Nora's Shop")
    membership = Membership.objects.get(user=newcomer, organization=organization)
    assert membership.role == Membership.Role.OWNER
    event = AuditEvent.objects.get(action=AuditEvent.Action.ORGANIZATION_CREATED)
    assert event.actor == newcomer
    assert event.after == {"organization": "Nora's Shop", "organization_id": organization.pk, "owner": "nora"}
    # Now an owner, the user can create an environment at once.
    assert client.get(reverse("environment_new")).status_code == 200


def test_it_refuses_an_organization_name_taken_in_another_letter_case(client_for, newcomer, org_a):
    response = client_for(newcomer).post(reverse("organization_new"), {"name": "ALPHA CORP"})
    assert response.status_code == 200
    assert "exists already" in response.context["form"].errors["name"][0]
    assert not Membership.objects.filter(user=newcomer).exists()


def test_it_sends_a_member_home_instead_of_letting_them_spawn_organizations(client_for, bob):
    client = client_for(bob)
    assert client.get(reverse("organization_new"))["Location"] == reverse("home")
    assert client.post(reverse("organization_new"), {"name": "Side Project"})["Location"] == reverse("home")
    assert not Organization.objects.filter(name="Side Project").exists()


def test_it_refuses_a_duplicate_name_in_the_service(newcomer, org_a):
    with pytest.raises(OrganizationNameTaken):
        organization_create(name="alpha corp", owner=newcomer)


def test_create_owner_makes_a_user_who_owns_a_new_organization(monkeypatch):
    monkeypatch.setenv("BYOK_OWNER_PASSWORD", PASSWORD)
    out = io.StringIO()
    call_command("create_owner", "--username", "ada", "--email", "ada@example.com", "--organization", "Example Corp", stdout=out)

    user = get_user_model().objects.get(username="ada")
    assert user.check_password(PASSWORD) and not user.is_staff
    membership = Membership.objects.get(user=user)
    assert (membership.organization.name, membership.role) == ("Example Corp", Membership.Role.OWNER)
    event = AuditEvent.objects.get(action=AuditEvent.Action.ORGANIZATION_CREATED)
    assert event.actor is None and event.actor_label == "command: create_owner"
    assert "owner of “Example Corp”" in out.getvalue()


def test_create_owner_refuses_a_weak_password_and_creates_nothing(monkeypatch):
    monkeypatch.setenv("BYOK_OWNER_PASSWORD", "password")
    with pytest.raises(CommandError, match="The password was refused"):
        call_command("create_owner", "--username", "ada", "--email", "a@example.com", "--organization", "X")
    assert not get_user_model().objects.exists() and not Organization.objects.exists()


def test_create_owner_without_a_terminal_or_password_variable_says_what_to_set(monkeypatch):
    monkeypatch.delenv("BYOK_OWNER_PASSWORD", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(CommandError, match="set BYOK_OWNER_PASSWORD"):
        call_command("create_owner", "--username", "ada", "--email", "a@example.com", "--organization", "X")


def test_create_owner_refuses_an_existing_username(monkeypatch, alice):
    monkeypatch.setenv("BYOK_OWNER_PASSWORD", PASSWORD)
    with pytest.raises(CommandError, match="exists already"):
        call_command("create_owner", "--username", "alice", "--email", "a@example.com", "--organization", "New Org")
    assert not Organization.objects.filter(name="New Org").exists()
