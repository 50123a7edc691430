"""Django admin for support staff: look at registrations, runs, audit events; never a secret."""

import re

from django.contrib import admin, messages
from django.contrib.admin.views.main import SEARCH_VAR
from django.utils.html import format_html_join

from keys.crypto import fingerprint
from keys.models import ApiKey, AuditEvent, KeyRegistration, Record, ReencryptionJob, ValidationRun
from keys.services.sealing import access_key_id_digests, sealed_state
from keys.services.validation import ValidationRequestRefused, registration_request_validation


class ReadOnlyAdmin(admin.ModelAdmin):
    """Support looks; state changes go through services (admin actions), never raw edits."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ValidationRunInline(admin.TabularInline):
    model = ValidationRun
    extra = 0
    fields = ["started_at", "trigger", "outcome", "failure_reason"]
    readonly_fields = fields
    can_delete = False
    show_change_link = True
    max_num = 0


# The access key IDs the portal registers: AKIA (or ASIA) and 16 upper-case letters or digits
# (keys.parsers.parse_access_key_id; IAM User Guide, "IAM identifiers", unique ID prefixes).
ACCESS_KEY_ID_RE = re.compile(r"(?:AKIA|ASIA)[A-Z0-9]{16}", re.IGNORECASE)
# The request attribute carrying a whole access key ID searched for (see changelist_view).
_SEARCHED_ACCESS_KEY_ID = "_searched_access_key_id"


@admin.register(KeyRegistration)
class KeyRegistrationAdmin(ReadOnlyAdmin):
    list_display = [
        "environment", "version", "kind", "access_mode", "status", "kms_key_arn", "region", "masked_access_key_id",
        "created_at",
    ]
    list_filter = ["status", "kind", "access_mode", "region", "environment__organization"]
    search_fields = ["kms_key_arn", "environment__name", "environment__public_id", "environment__organization__name", "access_key_id_last4"]
    fields = [
        "public_id", "environment", "version", "kind", "status", "restore_status", "inaccessible_reason",
        "kms_key_arn", "region", "account_id", "encryption_context",
        # Role mode (issue 14): the role and the environment's external ID (not secrets); no STS credentials exist here.
        "access_mode", "role_arn", "external_id", "masked_access_key_id",
        "access_key_id_sealed", "secret_access_key_sealed", "data_key_sealed", "encrypted_data_key_summary",
        "credentials_version", "generation", "created_by", "created_at", "activated_at", "retired_at",
        "last_verified_at", "kms_unreachable_since",
    ]
    readonly_fields = fields
    inlines = [ValidationRunInline]
    actions = ["run_validation"]

    def changelist_view(self, request, extra_context=None):
        """Searched by a whole access key ID, the page repeats only its last four characters
        (search box, filter, page and change links), as it shows access key IDs everywhere
        else; the search itself goes by the whole ID (``get_search_results``)."""
        term = request.GET.get(SEARCH_VAR, "").strip()
        if ACCESS_KEY_ID_RE.fullmatch(term):
            setattr(request, _SEARCHED_ACCESS_KEY_ID, term.upper())
            request.GET = request.GET.copy()
            request.GET[SEARCH_VAR] = term[-4:].upper()
        return super().changelist_view(request, extra_context)

    def get_search_results(self, request, queryset, search_term):
        """Django's search over ``search_fields`` (the last four characters of the access key
        ID among them) or, for a whole access key ID, the versions whose keyed digest matches
        it under any configured sealing key (``keys.services.sealing.access_key_id_digests``).
        The ID is stored only sealed and as that digest: nothing is unsealed, and the page
        shows the masked ID only. A version whose digest could not be re-keyed (retired or
        discarded before the digests moved to the sealing keys) is found by its last four."""
        access_key_id = getattr(request, _SEARCHED_ACCESS_KEY_ID, "")
        if not access_key_id and ACCESS_KEY_ID_RE.fullmatch(search_term.strip()):
            access_key_id = search_term.strip().upper()
        if access_key_id:
            return queryset.filter(access_key_id_digest__in=access_key_id_digests(access_key_id)), False
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description="External ID of the environment")
    def external_id(self, obj: KeyRegistration) -> str:
        return obj.environment.aws_external_id

    @admin.display(description="Access key ID")
    def access_key_id_sealed(self, obj: KeyRegistration) -> str:
        return sealed_state(registration=obj, field="sealed_access_key_id")

    @admin.display(description="Secret access key")
    def secret_access_key_sealed(self, obj: KeyRegistration) -> str:
        return sealed_state(registration=obj, field="sealed_secret_access_key")

    @admin.display(description="Platform-managed data key")
    def data_key_sealed(self, obj: KeyRegistration) -> str:
        return sealed_state(registration=obj, field="sealed_data_key")

    @admin.display(description="Encrypted data key")
    def encrypted_data_key_summary(self, obj: KeyRegistration) -> str:
        blob = bytes(obj.encrypted_data_key or b"")
        return f"{len(blob)} bytes, fingerprint {fingerprint(blob)}" if blob else "not set"

    @admin.action(description="Re-run validation against KMS")
    def run_validation(self, request, queryset):
        """Each selected BYOK version through the validation service: a validation run
        row, an audit event naming the support user, failed → pending validation."""
        queued, not_queued, refused = 0, 0, []
        for registration in queryset.filter(kind=KeyRegistration.Kind.BYOK).select_related("environment"):
            try:
                run = registration_request_validation(registration=registration, actor=request.user)
            except ValidationRequestRefused as e:
                refused.append(str(e))
            else:
                if run.outcome == ValidationRun.Outcome.NOT_QUEUED:
                    not_queued += 1
                else:
                    queued += 1
        self.message_user(request, f"Validation queued for {queued} BYOK key version(s).", messages.SUCCESS)
        if not_queued:
            self.message_user(
                request,
                f"Validation of {not_queued} BYOK key version(s) could not be queued (broker unreachable); "
                "the validation sweep queues them again.",
                messages.WARNING,
            )
        for reason in refused:
            self.message_user(request, reason, messages.WARNING)

    def get_actions(self, request):
        # A change permission is not needed: the action goes through the validation service.
        actions = super().get_actions(request)
        if not request.user.has_perm("keys.view_keyregistration"):
            actions.pop("run_validation", None)
        return actions


@admin.register(ValidationRun)
class ValidationRunAdmin(ReadOnlyAdmin):
    list_display = ["registration", "trigger", "outcome", "failure_reason", "started_at", "queued_at", "finished_at"]
    list_filter = ["outcome", "trigger", "failure_reason"]
    search_fields = ["registration__kms_key_arn", "registration__environment__name"]
    fields = [
        "registration", "trigger", "outcome", "failure_reason", "started_at", "queued_at", "finished_at", "checks_table",
    ]
    readonly_fields = fields

    @admin.display(description="Checks")
    def checks_table(self, obj: ValidationRun):
        return format_html_join(
            "\n", "<p><strong>{}</strong> — {}: {} {}</p>",
            ((c.get("label", c.get("name")), c.get("status"), c.get("cause", ""), c.get("remedy", "")) for c in obj.checks),
        )


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "action", "environment", "registration", "actor_name", "message"]
    list_filter = ["action", "environment__organization"]
    search_fields = ["message", "environment__name", "actor__username", "actor_label"]
    fields = ["created_at", "action", "environment", "registration", "actor", "actor_label", "before", "after", "message"]
    readonly_fields = fields


@admin.register(ApiKey)
class ApiKeyAdmin(ReadOnlyAdmin):
    list_display = ["name", "environment", "prefix", "created_by", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["environment__organization"]
    search_fields = ["name", "prefix", "environment__name"]
    fields = ["name", "environment", "prefix", "created_by", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = fields


@admin.register(Record)
class RecordAdmin(ReadOnlyAdmin):
    list_display = ["record_key", "environment", "key_version", "updated_at"]
    list_filter = ["key_version", "environment__organization"]
    search_fields = ["record_key", "environment__name"]
    fields = ["record_key", "environment", "key_version", "created_at", "updated_at"]
    readonly_fields = fields


@admin.register(ReencryptionJob)
class ReencryptionJobAdmin(ReadOnlyAdmin):
    list_display = ["environment", "target", "status", "records_moved", "records_total", "created_at", "finished_at"]
    list_filter = ["status", "environment__organization"]
    search_fields = ["environment__name", "environment__public_id", "public_id"]
    fields = [
        "public_id", "environment", "target", "status", "records_total", "records_moved", "records_failed",
        "skipped_versions", "batches", "records_per_second", "last_error", "created_by", "created_at",
        "started_at", "finished_at", "heartbeat_at",
    ]
    readonly_fields = fields
