"""State changes of organizations and environments."""

from django.db import transaction

from .models import Environment, Organization


class EnvironmentNameTaken(Exception):
    """The organization already has an environment of that name."""


def environment_create(*, organization: Organization, name: str, actor) -> Environment:
    """Create an environment with its platform-managed key version 1, active at once.

    Raises ``EnvironmentNameTaken`` when the organization already has that name.
    """
    from keys.models import AuditEvent
    from keys.services import audit, managed_registration_create

    name = name.strip()
    with transaction.atomic():
        if organization.environments.filter(name__iexact=name).exists():
            raise EnvironmentNameTaken(f"{organization} already has an environment named “{name}”.")
        environment = Environment.objects.create(organization=organization, name=name, created_by=actor)
        audit(
            action=AuditEvent.Action.ENVIRONMENT_CREATED,
            environment=environment,
            actor=actor,
            after={"name": name, "environment_id": str(environment.public_id)},
            message=f"Environment “{name}” created.",
        )
        managed_registration_create(environment=environment, actor=actor)
    return environment
