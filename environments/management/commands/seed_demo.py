"""Create the demo organization and a user to sign in with (idempotent)."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from environments.models import Membership, Organization


class Command(BaseCommand):
    help = "Create (or reset) a demo owner account and organization for the embedded default."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="demo")
        parser.add_argument("--password", default="demo-password-1")
        parser.add_argument("--organization", default="Demo Organization")

    def handle(self, *args, username: str, password: str, organization: str, **options):
        User = get_user_model()
        user, _ = User.objects.get_or_create(username=username, defaults={"email": f"{username}@example.com"})
        # Set only when it differs: a new password hash signs out every session of the user
        # (Django keys sessions on it), and make run calls this on every start.
        if not user.check_password(password):
            user.set_password(password)
        user.is_staff = True
        user.is_superuser = True
        user.save()
        org, _ = Organization.objects.get_or_create(name=organization)
        Membership.objects.update_or_create(user=user, organization=org, defaults={"role": Membership.Role.OWNER})
        self.stdout.write(f"Sign in as {username} / {password} (owner of “{organization}”, also a Django admin superuser).")
