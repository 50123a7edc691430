"""Create the first user and organization of a fresh installation.

    manage.py create_owner --username ada --email ada@example.com --organization "Example Corp"

asks for the password twice (Django's password validators apply). Without a terminal
(scripts, containers) the password is read from the environment variable named by
``--password-env`` (default ``BYOK_OWNER_PASSWORD``). The user becomes the organization's
owner; the creation is an audit event.
"""

from __future__ import annotations

import getpass
import os
import sys

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from environments.services import OrganizationNameTaken, organization_create


class Command(BaseCommand):
    help = "Create a user and an organization it owns (the first sign-in of a new installation)."

    def add_arguments(self, parser):
        parser.add_argument("--username", required=True)
        parser.add_argument("--email", required=True)
        parser.add_argument("--organization", required=True, help="the organization's name, e.g. \"Example Corp\"")
        parser.add_argument(
            "--password-env",
            default="BYOK_OWNER_PASSWORD",
            help="environment variable holding the password when there is no terminal to ask on",
        )
        parser.add_argument(
            "--staff", action="store_true", help="also let the user into Django admin (as a superuser)"
        )

    def handle(self, *args, username: str, email: str, organization: str, password_env: str, staff: bool, **options):
        User = get_user_model()
        if User.objects.filter(username=username).exists():
            raise CommandError(f"A user named {username} exists already; choose another --username.")
        user = User(username=username, email=email, is_staff=staff, is_superuser=staff)
        password = self._password(password_env)
        try:
            validate_password(password, user)
        except ValidationError as e:
            raise CommandError("The password was refused: " + " ".join(e.messages)) from e
        user.set_password(password)
        try:
            with transaction.atomic():
                user.save()
                org = organization_create(name=organization, owner=user, actor_label="command: create_owner")
        except OrganizationNameTaken as e:
            raise CommandError(str(e)) from e
        self.stdout.write(f"Created {username}, owner of “{org.name}”. Sign in at /accounts/login/.")

    def _password(self, password_env: str) -> str:
        from_env = os.environ.get(password_env, "")
        if from_env:
            return from_env
        if not sys.stdin.isatty():
            raise CommandError(f"No terminal to ask for the password on: set {password_env}.")
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Password (again): "):
            raise CommandError("The two passwords differ.")
        return first
