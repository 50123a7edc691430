"""Reads of what a user may see, and the access helpers of environments and organizations.

Anything outside the user's organizations is a 404 (``Http404``); a role that may not do
what the view does is a 403 (``PermissionDenied``, rendered by Django's handler403 with
``templates/403.html``). The role rules are ``Membership.may``.
"""

from django.core.exceptions import PermissionDenied
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


def require(membership: Membership, requirement: str) -> Membership:
    """``membership`` if its role meets ``requirement`` (``Membership.VIEW``, ``CHANGE``,
    ``OWN``); raises ``PermissionDenied`` otherwise."""
    if not membership.may(requirement):
        raise PermissionDenied("Your role in this organization does not allow this.")
    return membership


def get_environment_for_user(
    user, environment_id, *, requirement: str = Membership.VIEW
) -> tuple[Environment, Membership]:
    """The environment with public id ``environment_id`` and the user's membership of its
    organization. Raises ``Http404`` for an unknown id, a malformed id, or an environment
    outside the user's organizations (indistinguishable on purpose), and ``PermissionDenied``
    when the user's role does not meet ``requirement``."""
    try:
        environment = environments_for_user(user).get(public_id=environment_id)
    except (Environment.DoesNotExist, ValueError):
        raise Http404("No such environment.") from None
    membership = Membership.objects.get(user=user, organization_id=environment.organization_id)
    return environment, require(membership, requirement)


def get_organization_for_user(
    user, organization_id, *, requirement: str = Membership.VIEW
) -> tuple[Organization, Membership]:
    """The organization ``organization_id`` and the user's membership of it. Raises
    ``Http404`` when the user is not a member (or there is no such organization), and
    ``PermissionDenied`` when the user's role does not meet ``requirement``."""
    membership = (
        memberships_for_user(user).filter(organization_id=organization_id).first() if user.is_authenticated else None
    )
    if membership is None:
        raise Http404("No such organization.")
    return membership.organization, require(membership, requirement)


def members_with_two_factor(organization: Organization) -> list[Membership]:
    """The organization's memberships with their users, each with ``has_two_factor``
    (a confirmed TOTP device), owners first."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    memberships = list(
        Membership.objects.filter(organization=organization).select_related("user")
    )
    with_device = set(
        TOTPDevice.objects.filter(user__in=[m.user for m in memberships], confirmed=True).values_list("user_id", flat=True)
    )
    order = {Membership.Role.OWNER: 0, Membership.Role.ADMIN: 1, Membership.Role.VIEWER: 2}
    for membership in memberships:
        membership.has_two_factor = membership.user_id in with_device
    return sorted(memberships, key=lambda m: (order.get(m.role, 9), m.user.get_username()))
