"""Access-key-ID digests keyed from the sealing keys instead of SECRET_KEY (issue 13, item 8).

A digest is now ``"<sealing key id>$<64 hex>"`` (``keys.crypto.lookup_digest``), so the column
grows to 100 characters. Every existing digest is re-keyed to the first sealing key: the
access key ID is unsealed from ``sealed_access_key_id`` (it is never printed or logged, and its
buffer is wiped), its digest recomputed. A row whose access key ID cannot be unsealed (no
sealed value: role mode, retired, discarded; or sealed under a key no longer configured)
keeps its old digest, which matches nothing any more: it never counted for the duplicate
rule once dead, and an unreadable version must be given its credentials again anyway.

Backward, the SECRET_KEY digests are recomputed the same way (a row that cannot be unsealed
gets an empty digest, so that the column can shrink back to 64 characters).
"""

from django.conf import settings
from django.db import migrations, models
from django.utils.crypto import salted_hmac
from django.views.decorators.debug import sensitive_variables

from keys import crypto

TABLE = "keys_keyregistration"
FIELD = "sealed_access_key_id"
PURPOSE = "access_key_id"  # keys.services.sealing.ACCESS_KEY_ID_DIGEST_PURPOSE


def _rows(apps):
    KeyRegistration = apps.get_model("keys", "KeyRegistration")
    return KeyRegistration.objects.exclude(sealed_access_key_id="").only(
        "pk", "public_id", "sealed_access_key_id", "access_key_id_digest"
    )


@sensitive_variables()
def _unsealed_access_key_id(row, keys) -> bytearray | None:
    aad = crypto.sealing_aad(table=TABLE, row_id=str(row.public_id), field=FIELD)
    try:
        return crypto.unseal(row.sealed_access_key_id, keys=keys, aad=aad)
    except (crypto.SealingKeyUnavailable, crypto.SealedValueInvalid):
        return None


@sensitive_variables()
def rekey_forward(apps, schema_editor) -> None:
    keys = crypto.parse_sealing_keys(settings.SEALING_KEYS)
    for row in _rows(apps).iterator():
        if crypto.lookup_digest_key_id(row.access_key_id_digest) == keys[0].key_id:
            continue
        access_key_id = _unsealed_access_key_id(row, keys)
        if access_key_id is None:
            continue
        try:
            row.access_key_id_digest = crypto.lookup_digest(access_key_id, sealing_key=keys[0], purpose=PURPOSE)
        finally:
            crypto.wipe(access_key_id)
        row.save(update_fields=["access_key_id_digest"])


@sensitive_variables()
def rekey_backward(apps, schema_editor) -> None:
    keys = crypto.parse_sealing_keys(settings.SEALING_KEYS)
    for row in _rows(apps).iterator():
        access_key_id = _unsealed_access_key_id(row, keys)
        if access_key_id is None:
            digest = ""
        else:
            try:
                digest = salted_hmac("keys.access_key_id", access_key_id.decode("ascii"), algorithm="sha256").hexdigest()
            finally:
                crypto.wipe(access_key_id)
        row.access_key_id_digest = digest
        row.save(update_fields=["access_key_id_digest"])
    # Digests of rows without a sealed access key ID cannot be recomputed and would not
    # fit the narrower column.
    apps.get_model("keys", "KeyRegistration").objects.filter(sealed_access_key_id="").exclude(
        access_key_id_digest=""
    ).filter(access_key_id_digest__contains="$").update(access_key_id_digest="")


class Migration(migrations.Migration):

    dependencies = [
        ("keys", "0007_two_factor_audit_actions"),
    ]

    operations = [
        migrations.AlterField(
            model_name="keyregistration",
            name="access_key_id_digest",
            field=models.CharField(blank=True, db_index=True, max_length=100),
        ),
        migrations.RunPython(rekey_forward, rekey_backward, elidable=False),
    ]
