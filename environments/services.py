"""State changes of organizations and environments.

Creating an environment creates its platform-managed key version 1 through the keys
services; ``keys`` never imports this module (docs/architecture.md, "Packages and imports")."""

from django.db import IntegrityError, transaction

from environments.models import Environment, Membership, Organization
from keys.models import AuditEvent
from keys.services.audit import audit
from keys.services.registrations import managed_registration_create


class EnvironmentNameTaken(Exception):
    """The organization already has an environment of that name."""


class OrganizationNameTaken(Exception):
    """An organization of that name exists already."""


def environment_create(*, organization: Organization, name: str, actor) -> Environment:
    """Create an environment with its platform-managed key version 1, active at once.

    Raises ``EnvironmentNameTaken`` when the organization already has that name, in any
    letter case. The check before the insert gives the usual answer; the database's
    unique index on (organization, lower(name)) settles the race between simultaneous
    requests (the second insert waits for the first to commit, then fails).
    """
    name = name.strip()
    taken = EnvironmentNameTaken(f"{organization} already has an environment named “{name}”.")
    try:
        with transaction.atomic():
            if organization.environments.filter(name__iexact=name).exists():
                raise taken
            environment = Environment.objects.create(organization=organization, name=name, created_by=actor)
            audit(
                action=AuditEvent.Action.ENVIRONMENT_CREATED,
                environment=environment,
                actor=actor,
                after={"name": name, "environment_id": str(environment.public_id)},
                message=f"Environment “{name}” created.",
            )
            managed_registration_create(environment=environment, actor=actor)
    except IntegrityError as e:
        if organization.environments.filter(name__iexact=name).exists():
            raise taken from e
        raise
    return environment


def organization_create(*, name: str, owner, actor_label: str = "") -> Organization:
    """Create an organization with ``owner`` as its first owner, and audit it.

    ``actor_label`` names a command when no signed-in user did it ("command: create_owner").
    Raises ``OrganizationNameTaken`` when an organization has that name in any letter case.
    """
    name = name.strip()
    taken = OrganizationNameTaken(f"An organization named “{name}” exists already; choose another name.")
    try:
        with transaction.atomic():
            if Organization.objects.filter(name__iexact=name).exists():
                raise taken
            organization = Organization.objects.create(name=name)
            Membership.objects.create(user=owner, organization=organization, role=Membership.Role.OWNER)
            audit(
                action=AuditEvent.Action.ORGANIZATION_CREATED,
                actor=owner if not actor_label else None,
                actor_label=actor_label,
                after={"organization": name, "organization_id": organization.pk, "owner": owner.get_username()},
                message=f"Organization “{name}” created with {owner.get_username()} as its owner.",
            )
    except IntegrityError as e:
        if Organization.objects.filter(name__iexact=name).exists():
            raise taken from e
        raise
    return organization
