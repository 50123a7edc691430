"""Tenancy: organizations, their members' roles, and their environments."""

import secrets
import uuid

from django.conf import settings
from django.db import models
from django.db.models.functions import Lower


class Organization(models.Model):
    """A customer of the platform. Everything a user sees hangs off one of these."""

    name = models.CharField(max_length=200, unique=True)
    # When on, owners and admins need a verified TOTP session before any state-changing
    # page of this organization's environments (portal.middleware.TwoFactorMiddleware).
    require_two_factor = models.BooleanField(
        "require two-factor authentication",
        default=False,
        help_text="Owners and admins must verify a TOTP code before changing anything in this organization.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """A user's role in one organization.

    owner  — everything an admin can do, plus retiring key versions and managing members.
    admin  — create environments, register/validate/activate keys, issue API keys.
    viewer — sees the organization's environments and keys, changes nothing.

    These role rules live here and nowhere else (docs/architecture.md, "Invariants", 4):
    views ask :meth:`may` through the access helpers (``require=Membership.CHANGE`` or
    ``Membership.OWN``), pages ask the ``can_*`` predicates.
    """

    # What an action requires (``may``): looking, changing, or owning.
    VIEW = "view"
    CHANGE = "change"
    OWN = "own"

    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        ADMIN = "admin", "Admin"
        VIEWER = "viewer", "Viewer"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="memberships")
    organization = models.ForeignKey(Organization, models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "organization"], name="one_membership_per_org"),
        ]

    def __str__(self) -> str:
        return f"{self.user} is {self.role} of {self.organization}"

    @property
    def can_change(self) -> bool:
        """Owners and admins change things; viewers only look."""
        return self.role in (self.Role.OWNER, self.Role.ADMIN)

    @property
    def is_owner(self) -> bool:
        """Owners alone retire key versions, run revocation drills and set the organization's
        security policy."""
        return self.role == self.Role.OWNER

    def may(self, requirement: str) -> bool:
        """Whether this role meets ``requirement`` (``VIEW``, ``CHANGE`` or ``OWN``)."""
        if requirement == self.VIEW:
            return True
        if requirement == self.CHANGE:
            return self.can_change
        if requirement == self.OWN:
            return self.is_owner
        raise ValueError(f"Unknown requirement {requirement!r}.")

    def can_activate(self, registration) -> bool:
        """Owners and admins may activate a key version that passed validation (BYOK or
        platform-managed alike; ``registration`` is a ``keys.models.KeyRegistration``)."""
        return self.can_change and registration.can_be_activated


def new_external_id() -> str:
    r"""A fresh external ID for role mode: 192 random bits, URL-safe (STS allows 2-1224 of
    ``[\w+=,.@:/-]``). Unguessable, so that no other customer of the platform can make it
    assume this environment's role (the confused deputy problem, IAM User Guide)."""
    return "byok-" + secrets.token_urlsafe(24)


class Environment(models.Model):
    """One of an organization's environments (e.g. production, staging).

    Addressed in URLs and the data-plane API by ``public_id`` (a UUID), never by its
    database id.
    """

    organization = models.ForeignKey(Organization, models.CASCADE, related_name="environments")
    name = models.CharField(max_length=100)
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # Issued by the portal, never accepted from the customer: not editable, not in any form.
    aws_external_id = models.CharField(
        "external ID", max_length=64, unique=True, default=new_external_id, editable=False
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["organization__name", "name"]
        constraints = [
            # Case-insensitive: "Production" and "production" are one name. An index on
            # lower(name), so that simultaneous creations cannot both pass the check.
            models.UniqueConstraint("organization", Lower("name"), name="env_name_ci_unique_in_org"),
        ]

    def __str__(self) -> str:
        return f"{self.organization} / {self.name}"
