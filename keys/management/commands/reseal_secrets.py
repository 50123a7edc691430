"""Re-seal every sealed value, and re-key every access-key-ID digest, under the first key of SEALING_KEYS."""

from django.core.management.base import BaseCommand

from keys.services.sealing import reseal_all, sealing_keys


class Command(BaseCommand):
    help = (
        "Re-seal IAM credentials and platform-managed data keys, and re-key access-key-ID digests, "
        "under the first sealing key; reports how many changed."
    )

    def handle(self, *args, **options):
        changed = reseal_all()
        self.stdout.write(
            f"Re-sealed {changed.values} value(s) and re-keyed {changed.digests} access key ID digest(s) "
            f"under sealing key {sealing_keys()[0].key_id}."
        )
