"""Environment names are unique per organization in any letter case, also when several
"New environment" submissions arrive at once (no IntegrityError, no 500)."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction
from django.test import Client
from django.urls import reverse

from environments.models import Environment
from environments.services import EnvironmentNameTaken, environment_create
from tests.support import at_once


@pytest.mark.django_db
def test_the_database_refuses_a_name_differing_only_in_letter_case(org_a, alice):
    Environment.objects.create(organization=org_a, name="Production")
    with pytest.raises(IntegrityError), transaction.atomic():
        Environment.objects.create(organization=org_a, name="production")


@pytest.mark.django_db
def test_the_same_name_in_another_organization_is_fine(org_a, org_b, alice, charlie):
    environment_create(organization=org_a, name="production", actor=alice)
    assert environment_create(organization=org_b, name="Production", actor=charlie).name == "Production"


@pytest.mark.django_db
def test_it_answers_a_race_that_passed_the_check_with_the_name_taken_error(org_a, alice, monkeypatch):
    """GIVEN another request inserted "Staging" after this one's check ran (simulated by
    hiding it from the check) WHEN this one inserts "staging" THEN the unique index refuses
    it and the service says the name is taken, leaving one environment."""
    Environment.objects.create(organization=org_a, name="Staging")
    real_filter = type(org_a.environments).filter

    def blind_filter(self, *args, **kwargs):
        queryset = real_filter(self, *args, **kwargs)
        return queryset.none() if kwargs.get("name__iexact") and not blind_filter.seen else queryset

    blind_filter.seen = False

    def create_then_see(*args, **kwargs):
        blind_filter.seen = True
        return real_create(*args, **kwargs)

    real_create = Environment.objects.create
    monkeypatch.setattr(type(org_a.environments), "filter", blind_filter)
    monkeypatch.setattr(Environment.objects, "create", create_then_see)

    with pytest.raises(EnvironmentNameTaken):
        environment_create(organization=org_a, name="staging", actor=alice)
    assert org_a.environments.filter(name__iexact="staging").count() == 1


@pytest.mark.django_db(transaction=True)
def test_simultaneous_identical_submissions_create_one_environment_and_no_500(org_a, alice):
    """Six browsers post the same (and case-differing) name at the same moment: one
    environment, every other answer is the form with "already has an environment"."""
    if connection.vendor != "postgresql":
        pytest.skip("needs concurrent writers (PostgreSQL)")
    names = ["Payments", "payments", "PAYMENTS", "Payments", "payments", "Payments"]
    clients = [Client() for _ in names]
    for client in clients:
        client.force_login(alice)

    def submit(client: Client, name: str) -> int:
        return client.post(reverse("environment_new"), {"organization": org_a.pk, "name": name}).status_code

    statuses = at_once([lambda c=c, n=n: submit(c, n) for c, n in zip(clients, names, strict=True)])

    assert sorted(statuses) == [200] * (len(names) - 1) + [302]
    assert org_a.environments.filter(name__iexact="payments").count() == 1
