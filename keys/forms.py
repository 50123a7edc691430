"""Forms of the key pages. Field checks are ``keys.parsers``; these forms only wire them in."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from django import forms
from django.conf import settings
from django.views.decorators.debug import sensitive_variables

from keys import parsers
from keys.models import KeyRegistration
from keys.services import api_keys, records
from keys.services.registrations import access_key_in_use

AccessMode = KeyRegistration.AccessMode
CREDENTIAL_FIELDS = ("access_key_id", "secret_access_key")

NESTED_TOO_DEEPLY = "This JSON is nested too deeply to store: use fewer levels of [ ] and { }."

SECRET_NOT_KEPT = "Not kept after an error, for your safety: enter the secret access key again."

# The shape of an AWS secret access key: 40 characters of base64's alphabet standing alone
# (IAM User Guide, "Managing access keys"). A longer base64 run (an encrypted data key) or
# a key ARN does not match.
_SECRET_SHAPED = re.compile(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")


def looks_like_secret_access_key(value: object) -> bool:
    """Whether ``value`` (a posted field) contains something shaped like a secret access key."""
    return isinstance(value, str) and bool(_SECRET_SHAPED.search(value))


class _GroupedCount(str):
    """A field error message whose ``{show_value}`` / ``{limit_value}`` counts print with
    thousands separators ("8,192"), as the parsers' own messages do (``parsers._clean``):
    Django fills a message with ``message % params``, and ``%d`` has no separator."""

    def __mod__(self, params):  # type: ignore[override]
        return self.format(**{k: f"{v:,}" if isinstance(v, int) else v for k, v in dict(params).items()})


def _messages(item: str, *, required: str) -> dict[str, str]:
    """Field error messages for what Django checks before the parsers run, in the parsers'
    words: what is wrong and what to do (the value itself is never repeated)."""
    return {
        "required": required,
        "max_length": _GroupedCount(
            f"The {item} is too long: {{show_value}} characters, and the limit is {{limit_value}}. "
            f"Check that you pasted only the {item}."
        ),
        "null_characters_not_allowed": (
            f"The {item} contains the control character U+0000 (NUL). Copy the {item} again as plain text."
        ),
    }


def _parsed(parse, value, **kwargs):
    try:
        return parse(value, **kwargs)
    except parsers.InputError as e:
        raise forms.ValidationError(e.message) from None


def _role_arn_field(*, required: bool) -> forms.CharField:
    """The role ARN field of role mode (registration and replacement); checked by
    ``parsers.parse_role_arn`` once the KMS key ARN, and so its partition, is known."""
    return forms.CharField(
        label="Role ARN",
        max_length=parsers.ROLE_ARN_MAX_LENGTH,
        required=required,
        error_messages=_messages("role ARN", required=f"Enter the role ARN, for example {parsers.EXAMPLE_ROLE_ARN}."),
        help_text="arn:aws:iam::<account>:role/<name> — the role you created with the trust policy of the setup guide.",
        widget=forms.TextInput(attrs={"spellcheck": "false", "autocomplete": "off",
                                      "placeholder": "arn:aws:iam::111122223333:role/byok-portal-access"}),
    )


class CredentialsFields(forms.Form):
    """The IAM access key of the portal's IAM user (shared by registration and replacement)."""

    access_key_id = forms.CharField(
        label="Access Key",
        max_length=200,
        error_messages=_messages(
            "access key ID", required="Enter the access key ID of the IAM user: 20 characters starting with AKIA."
        ),
        help_text="The access key ID of the IAM user you created for the portal (starts with AKIA).",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    secret_access_key = forms.CharField(
        label="Secret Access Key",
        max_length=200,
        strip=False,
        error_messages=_messages(
            "secret access key",
            required="Enter the secret access key: the 40-character value shown once when the access key was created.",
        ),
        help_text="40 characters, shown once by AWS when you created the access key. It is sealed at once and never shown again.",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )

    def __init__(self, *args, environment, registration=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.environment = environment
        self.registration = registration

    def clean_access_key_id(self) -> str:
        access_key_id = _parsed(parsers.parse_access_key_id, self.cleaned_data["access_key_id"])
        if access_key_in_use(environment=self.environment, access_key_id=access_key_id, exclude=self.registration):
            raise forms.ValidationError(
                "This access key is already registered on another key version of this environment. "
                "Create a separate IAM access key for each key version."
            )
        return access_key_id

    @sensitive_variables("value")
    def clean_secret_access_key(self) -> str:
        value = self.cleaned_data["secret_access_key"]
        return _parsed(parsers.parse_secret_access_key, value)

    def add_error_after_clean(self, field: str, message: str) -> None:
        """An error found by a service once the form checked out; the secret is not kept either."""
        self.add_error(field, message)
        if field != "secret_access_key" and "secret_access_key" not in self._errors:
            self.add_error("secret_access_key", SECRET_NOT_KEPT)

    def full_clean(self) -> None:
        super().full_clean()
        if self.is_bound and self._errors and "secret_access_key" in self.fields and "secret_access_key" not in self._errors:
            # The secret is never echoed back; tell the admin why the field is empty again.
            if self.data.get(self.add_prefix("secret_access_key")):
                self._errors["secret_access_key"] = self.error_class([SECRET_NOT_KEPT])
        if self.is_bound and self._errors:
            self._drop_secret_shaped_values()

    def _drop_secret_shaped_values(self) -> None:
        """A form shown again after an error renders no value shaped like a secret access
        key, whichever field it was pasted into (the cleaned data is already taken)."""
        data = self.data.copy()
        for name in self.fields:
            key = self.add_prefix(name)
            if looks_like_secret_access_key(data.get(key)):
                data[key] = ""
                if name not in self._errors:
                    self._errors[name] = self.error_class(
                        ["This looked like a secret access key, so it was not kept: enter it in its own field."]
                    )
        self.data = data


class _AccessModeField(forms.ChoiceField):
    """The access mode radio group: a choice is always made (the access key is preselected), so
    it is required and shown without "(optional)"; a post without it (a client that predates
    role mode) still means the access key."""

    def to_python(self, value):
        return super().to_python(value) or AccessMode.ACCESS_KEY


class RegistrationForm(CredentialsFields):
    """The seed document's five items, in its words, plus an optional encryption context."""

    field_order = [
        "access_mode", "encrypted_data_key", "access_key_id", "secret_access_key", "role_arn", "kms_key_arn", "region",
        "encryption_context",
    ]

    # Role mode (issue 14) is offered when the platform has its own principal (PLATFORM_AWS_PRINCIPAL_ARN).
    access_mode = _AccessModeField(
        label="How the platform reaches your key",
        choices=[(AccessMode.ACCESS_KEY, AccessMode.ACCESS_KEY.label), (AccessMode.ROLE, AccessMode.ROLE.label)],
        initial=AccessMode.ACCESS_KEY,
        help_text="IAM role: you create a role that trusts the platform with this environment's external ID; "
        "no secret of yours is stored. IAM user access key: the platform stores an access key, sealed.",
        widget=forms.RadioSelect(attrs={"class": "access-mode"}),
    )
    role_arn = _role_arn_field(required=False)

    encrypted_data_key = forms.CharField(
        label="Encrypted Data Key",
        # The parser's limit (the whole pasted CLI JSON): one limit, one message.
        max_length=parsers.ENCRYPTED_DATA_KEY_MAX_LENGTH,
        error_messages=_messages(
            "encrypted data key",
            required="Paste the encrypted data key: the CiphertextBlob value printed by "
            "aws kms generate-data-key-without-plaintext.",
        ),
        help_text="The CiphertextBlob printed by aws kms generate-data-key-without-plaintext (base64). "
        "Pasting the whole JSON output works too.",
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false", "autocomplete": "off"}),
    )
    kms_key_arn = forms.CharField(
        label="KMS Key ARN",
        max_length=2048,
        error_messages=_messages(
            "KMS key ARN", required=f"Enter the KMS key ARN, for example {parsers.EXAMPLE_KMS_KEY_ARN}."
        ),
        help_text="arn:aws:kms:<region>:<account>:key/<key id> — the key ARN, not an alias.",
        widget=forms.TextInput(attrs={"spellcheck": "false", "autocomplete": "off", "placeholder": "arn:aws:kms:eu-west-1:111122223333:key/…"}),
    )
    region = forms.CharField(
        label="Region code",
        max_length=64,
        error_messages=_messages(
            "region code", required="Enter the region code of the KMS key (the region in its ARN), e.g. eu-west-1."
        ),
        help_text="The region of the KMS key, e.g. eu-west-1 (the same as in the ARN).",
        widget=forms.TextInput(attrs={"spellcheck": "false", "autocomplete": "off"}),
    )
    encryption_context = forms.CharField(
        label="Encryption context",
        required=False,
        max_length=parsers.ENCRYPTION_CONTEXT_MAX_LENGTH,
        error_messages=_messages("encryption context", required=""),
        help_text="Only if you passed --encryption-context to generate-data-key-without-plaintext: "
        'the same pairs, as {"key": "value"} or key=value,key2=value2.',
        widget=forms.TextInput(attrs={"spellcheck": "false", "autocomplete": "off"}),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not settings.PLATFORM_AWS_PRINCIPAL_ARN:
            del self.fields["access_mode"], self.fields["role_arn"]
        elif self.role_mode:
            # No access key in role mode: the fields are not asked for, so nothing of them is kept.
            for name in CREDENTIAL_FIELDS:
                del self.fields[name]
            self.fields["role_arn"].required = True
        elif self.is_bound:
            del self.fields["role_arn"]  # access-key mode: a posted role ARN is not taken
        else:
            self.fields["role_arn"].required = True  # shown without "(optional)": it is needed in role mode

    @property
    def role_mode(self) -> bool:
        return (
            "access_mode" in self.fields
            and self.is_bound
            and self.data.get(self.add_prefix("access_mode")) == AccessMode.ROLE
        )

    def clean_access_mode(self) -> str:
        return self.cleaned_data.get("access_mode") or AccessMode.ACCESS_KEY

    def clean_encrypted_data_key(self) -> bytes:
        value = self.cleaned_data["encrypted_data_key"]
        try:
            return _parsed(parsers.parse_encrypted_data_key, value)
        except forms.ValidationError:
            if "plaintext" in value.lower():
                # What was pasted holds a plaintext data key (generate-data-key output):
                # never render it back into the page.
                self.data = self.data.copy()
                self.data[self.add_prefix("encrypted_data_key")] = ""
            raise

    def clean_kms_key_arn(self) -> parsers.KmsKeyArn:
        return _parsed(parsers.parse_kms_key_arn, self.cleaned_data["kms_key_arn"])

    def clean_encryption_context(self) -> dict[str, str]:
        return _parsed(parsers.parse_encryption_context, self.cleaned_data.get("encryption_context", ""))

    @sensitive_variables("cleaned")
    def clean(self):
        cleaned = super().clean()
        if "region" in self.data and "region" not in self._errors:
            arn = cleaned.get("kms_key_arn")
            try:
                cleaned["region"] = parsers.parse_region(self.data.get("region", ""), kms_key_arn=arn)
            except parsers.InputError as e:
                self.add_error("region", e.message)
        if self.role_mode and "role_arn" not in self._errors:
            try:
                cleaned["role_arn"] = parsers.parse_role_arn(
                    self.data.get(self.add_prefix("role_arn"), ""), kms_key_arn=cleaned.get("kms_key_arn")
                )
            except parsers.InputError as e:
                self.add_error("role_arn", e.message)
        return cleaned

    def clean_role_arn(self) -> str:
        # Checked in clean(), once the key ARN (and so its partition) is known.
        return self.cleaned_data.get("role_arn", "")

    def clean_region(self) -> str:
        # Checked in clean(), once the ARN is known.
        return self.cleaned_data["region"]


class ReplaceCredentialsForm(CredentialsFields):
    """New IAM credentials for an existing BYOK key version (the customer rotated their access key)."""


class ReplaceRoleArnForm(CredentialsFields):
    """A new role ARN for an existing role-mode key version (the customer moved the platform's
    access to another role). Checked like on the registration form: grammar, a role (not a
    user or an assumed-role session), in the partition of the version's KMS key."""

    role_arn = _role_arn_field(required=True)

    # The parser's own words point to the "IAM user access key" choice of the registration
    # form; here that would be wrong: switching access mode is a rotation to a new key version
    # (issue 14, item 6), not a replacement.
    USER_ARN_MESSAGE = (
        "This is an IAM user ARN. A role ARN is needed here: this key version reaches KMS through a role "
        "in your account (arn:aws:iam::ACCOUNT:role/NAME). To use an IAM user access key instead, register "
        "a new key version with that access mode; switching access mode is a rotation."
    )

    def __init__(self, *args, environment, registration, **kwargs):
        super().__init__(*args, environment=environment, registration=registration, **kwargs)
        for name in CREDENTIAL_FIELDS:  # no access key in role mode
            del self.fields[name]

    def clean_role_arn(self) -> parsers.RoleArn:
        try:
            kms_key_arn = parsers.parse_kms_key_arn(self.registration.kms_key_arn)
        except parsers.InputError:  # an older row: the grammar and the role-not-user checks still apply
            kms_key_arn = None
        try:
            return parsers.parse_role_arn(self.cleaned_data["role_arn"], kms_key_arn=kms_key_arn)
        except parsers.InputError as e:
            raise forms.ValidationError(self.USER_ARN_MESSAGE if e.code == parsers.USER_ARN else e.message) from None


class EditRegistrationForm(RegistrationForm):
    """Edit a key version that never served: the same five items and the encryption
    context. The KMS key ARN, region and context start filled in; the encrypted data key
    and the IAM credentials are write-only, left empty to keep the registered ones."""

    KEEP = "Leave empty to keep the registered one."

    def __init__(self, *args, registration, **kwargs):
        super().__init__(*args, registration=registration, **kwargs)
        # The access mode is not edited here: switching modes is a rotation to a new key version.
        self.fields.pop("access_mode", None)
        self.fields.pop("role_arn", None)
        if not self.is_bound:
            self.initial.update({
                "kms_key_arn": registration.kms_key_arn,
                "region": registration.region,
                "encryption_context": json.dumps(registration.encryption_context) if registration.encryption_context else "",
            })
        for name in ("encrypted_data_key", "access_key_id", "secret_access_key"):
            self.fields[name].required = False
        self.fields["encrypted_data_key"].help_text = (
            f"{self.KEEP} Paste a new CiphertextBlob only if you generated a new encrypted data key."
        )
        self.fields["access_key_id"].help_text = (
            f"Registered: {registration.masked_access_key_id}. {self.KEEP} A new one needs its secret access key too."
        )
        self.fields["secret_access_key"].help_text = "Write-only: never shown. Enter it only with a new access key ID."

    def clean_encrypted_data_key(self) -> bytes | None:
        if not self.cleaned_data.get("encrypted_data_key", "").strip():
            return None
        return super().clean_encrypted_data_key()

    def clean_access_key_id(self) -> str:
        if not self.cleaned_data.get("access_key_id", "").strip():
            return ""
        return super().clean_access_key_id()

    @sensitive_variables("value")
    def clean_secret_access_key(self) -> str:
        value = self.cleaned_data.get("secret_access_key", "")
        if not value:
            return ""
        return super().clean_secret_access_key()

    @sensitive_variables("cleaned")
    def clean(self):
        cleaned = super().clean()
        has_id, has_secret = bool(cleaned.get("access_key_id")), bool(cleaned.get("secret_access_key"))
        if has_id and not has_secret and "secret_access_key" not in self._errors:
            self.add_error("secret_access_key", "Enter the secret access key of the new access key ID.")
        if has_secret and not has_id and "access_key_id" not in self._errors:
            self.add_error("access_key_id", "Enter the access key ID this secret access key belongs to.")
        return cleaned


FORM_OUT_OF_DATE = "This form is out of date: reload the page and submit it again."


class ApiKeyForm(forms.Form):
    """``form_token``: a fresh one-time token in each form shown (``uuid4``, also made by
    ``{% new_form_token %}`` on the environment page), claimed by the key it creates
    (``api_keys.api_key_create``), so that submitting one form twice creates one key."""

    name = forms.CharField(
        label="Name",
        max_length=api_keys.NAME_MAX_LENGTH,
        help_text="What uses this key, e.g. “billing service (production)”.",
    )
    form_token = forms.UUIDField(
        widget=forms.HiddenInput,
        initial=uuid.uuid4,  # called each time the form is shown
        error_messages={"required": FORM_OUT_OF_DATE, "invalid": FORM_OUT_OF_DATE},
    )


class TryItForm(forms.Form):
    record_key = forms.CharField(
        label="Record key",
        max_length=records.RECORD_KEY_MAX_LENGTH,
        initial="customer:42:profile",
        help_text="1–255 characters of A–Z, a–z, 0–9, “.”, “_”, “:” or “-”, starting with a letter or digit.",
    )
    body = forms.CharField(
        label="Body (JSON)",
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false"}),
        initial='{\n  "name": "Ada Lovelace",\n  "email": "ada@example.org"\n}',
        help_text="Any JSON value. It is encrypted with the environment's active key version.",
    )

    def clean_record_key(self) -> str:
        try:
            return records.validate_record_key(self.cleaned_data["record_key"])
        except records.InvalidRecordInput as e:
            raise forms.ValidationError(str(e))

    @sensitive_variables()
    def clean_body(self) -> Any:
        """The parsed body, if it is JSON a record can hold: ``json.loads`` recurses once per
        nesting level, so ``[`` typed 100,000 times exhausts the stack (``RecursionError``), and
        a body that just parsed can still exhaust it when encoded again
        (``records.encode_body``, and the page's indented read-back); an integer of more than
        4,300 digits is well-formed JSON that Python will not convert, and is said to be too
        long (``records.number_too_long``), as the API says it. Each is a form error,
        never a 500; nothing is stored. These run deeper in the stack than the view's write,
        read-back and display, so what passes here passes there."""
        try:
            body = json.loads(self.cleaned_data["body"])
        except RecursionError:
            raise forms.ValidationError(NESTED_TOO_DEEPLY) from None
        except ValueError as e:
            too_long = records.number_too_long(self.cleaned_data["body"])
            raise forms.ValidationError(too_long or f"This is not valid JSON: {e}.") from None
        try:
            records.encode_body(body)
            json.dumps(body, indent=2)  # as the page shows it read back (json's recursive pure-Python encoder)
        except records.RecordError as e:
            raise forms.ValidationError(str(e)) from None
        except RecursionError:
            raise forms.ValidationError(NESTED_TOO_DEEPLY) from None
        return body
