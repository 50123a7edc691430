"""Reads of what a user may see. Anything outside the user's organizations is a 404."""

from django.db.models import QuerySet
from django.http import Http404

from .models import Environment, Membership, Organization


def memberships_for_user(user) -> QuerySet[Membership]:
    """The user's memberships, with their organizations, ordered by organization name."""
    if not user.is_authenticated:
        return Membership.objects.none()
    return Membership.objects.filter(user=user).select_related("organization").order_by("organization__name")


def organizations_for_user(user, *, can_change: bool = False) -> QuerySet[Organization]:
    """Organizations the user belongs to; with ``can_change``, only those where they are owner or admin."""
    memberships = memberships_for_user(user)
    if can_change:
        memberships = memberships.filter(role__in=[Membership.Role.OWNER, Membership.Role.ADMIN])
    return Organization.objects.filter(pk__in=memberships.values("organization_id"))


def environments_for_user(user) -> QuerySet[Environment]:
    """Every environment of the user's organizations."""
    return Environment.objects.filter(
        organization__in=organizations_for_user(user)
    ).select_related("organization")


def get_environment_for_user(user, environment_id) -> tuple[Environment, Membership]:
    """The environment with public id ``environment_id`` and the user's membership of its
    organization. Raises ``Http404`` for an unknown id, a malformed id, or an environment
    outside the user's organizations (indistinguishable on purpose)."""
    try:
        environment = environments_for_user(user).get(public_id=environment_id)
    except (Environment.DoesNotExist, ValueError):
        raise Http404("No such environment.")
    membership = Membership.objects.get(user=user, organization_id=environment.organization_id)
    return environment, membership
