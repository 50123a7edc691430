"""Django admin for support staff: look at registrations, runs, audit events; never a secret."""

from django.contrib import admin, messages
from django.utils.html import format_html_join

from keys.crypto import fingerprint
from keys.models import ApiKey, AuditEvent, KeyRegistration, Record, ReencryptionJob, ValidationRun
from keys.services.sealing import sealed_state
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


@admin.register(KeyRegistration)
class KeyRegistrationAdmin(ReadOnlyAdmin):
    list_display = ["environment", "version", "kind", "status", "kms_key_arn", "region", "masked_access_key_id", "created_at"]
    list_filter = ["status", "kind", "region", "environment__organization"]
    search_fields = ["kms_key_arn", "environment__name", "environment__public_id", "environment__organization__name", "access_key_id_last4"]
    fields = [
        "public_id", "environment", "version", "kind", "status", "restore_status", "inaccessible_reason",
        "kms_key_arn", "region", "account_id", "encryption_context", "masked_access_key_id",
        "access_key_id_sealed", "secret_access_key_sealed", "data_key_sealed", "encrypted_data_key_summary",
        "credentials_version", "generation", "created_by", "created_at", "activated_at", "retired_at",
        "last_verified_at", "kms_unreachable_since",
    ]
    readonly_fields = fields
    inlines = [ValidationRunInline]
    actions = ["run_validation"]

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
        queued, refused = 0, []
        for registration in queryset.filter(kind=KeyRegistration.Kind.BYOK).select_related("environment"):
            try:
                registration_request_validation(registration=registration, actor=request.user)
            except ValidationRequestRefused as e:
                refused.append(str(e))
            else:
                queued += 1
        self.message_user(request, f"Validation queued for {queued} BYOK key version(s).", messages.SUCCESS)
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
    list_display = ["registration", "trigger", "outcome", "failure_reason", "started_at", "finished_at"]
    list_filter = ["outcome", "trigger", "failure_reason"]
    search_fields = ["registration__kms_key_arn", "registration__environment__name"]
    fields = ["registration", "trigger", "outcome", "failure_reason", "started_at", "finished_at", "checks_table"]
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
