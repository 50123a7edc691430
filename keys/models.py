"""Key registrations (key versions), validation runs, audit events, records and API keys.

Models keep pure state: fields, properties and small predicates. Every state change goes
through ``keys.services``, which performs compare-and-set transitions and writes an
``AuditEvent`` for each.
"""

import uuid

from django.conf import settings
from django.db import models

from environments.models import Environment


class KeyRegistration(models.Model):
    """One key version of an environment: version 1, 2, … inside the environment.

    ``kind`` is ``managed`` (a platform-managed data key sealed by the sealing key) or
    ``byok`` (the customer's encrypted data key, unwrapped by KMS ``Decrypt`` with the
    customer's sealed IAM credentials).

    Allowed status transitions (enforced by ``keys.services``, never by views)::

        pending_validation -> validating
        validating         -> valid | failed | pending_validation (KMS could not be reached)
        failed             -> validating | pending_validation (validate again, edited)
        valid              -> validating | active | pending_validation (edited)
        pending_validation | failed | valid -> discarded (never in service: material destroyed)
        active             -> decrypt_only      (another version was activated)
        active             -> inaccessible      (KMS refuses permanently)
        decrypt_only       -> inaccessible | retired | active
        inaccessible       -> active | decrypt_only   (access restored: back to restore_status)

    A ``managed`` version is created ``active`` (version 1 of every new environment).
    A ``discarded`` version (one that never served) and a ``retired`` version's sealed material is destroyed (overwritten) and never returns.
    """

    class Kind(models.TextChoices):
        MANAGED = "managed", "Platform-managed"
        BYOK = "byok", "BYOK (AWS KMS)"

    class AccessMode(models.TextChoices):
        ACCESS_KEY = "access_key", "IAM user access key"
        ROLE = "role", "IAM role (recommended)"

    class Status(models.TextChoices):
        PENDING_VALIDATION = "pending_validation", "Pending validation"
        VALIDATING = "validating", "Validating"
        VALID = "valid", "Valid"
        FAILED = "failed", "Failed"
        ACTIVE = "active", "Active"
        DECRYPT_ONLY = "decrypt_only", "Decrypt-only"
        INACCESSIBLE = "inaccessible", "Inaccessible"
        RETIRED = "retired", "Retired"
        DISCARDED = "discarded", "Discarded"

    TRANSITIONS: dict[str, frozenset[str]] = {
        Status.PENDING_VALIDATION: frozenset({Status.VALIDATING, Status.DISCARDED}),
        Status.VALIDATING: frozenset({Status.VALID, Status.FAILED, Status.PENDING_VALIDATION}),
        Status.FAILED: frozenset({Status.VALIDATING, Status.PENDING_VALIDATION, Status.DISCARDED}),
        Status.VALID: frozenset({Status.VALIDATING, Status.ACTIVE, Status.PENDING_VALIDATION, Status.DISCARDED}),
        Status.ACTIVE: frozenset({Status.DECRYPT_ONLY, Status.INACCESSIBLE}),
        Status.DECRYPT_ONLY: frozenset({Status.INACCESSIBLE, Status.RETIRED, Status.ACTIVE}),
        Status.INACCESSIBLE: frozenset({Status.ACTIVE, Status.DECRYPT_ONLY}),
        Status.RETIRED: frozenset(),
        Status.DISCARDED: frozenset(),
    }
    # Statuses a version never put in service is in: it may be edited or discarded.
    EDITABLE_STATUSES = frozenset({Status.PENDING_VALIDATION, Status.FAILED, Status.VALID})
    # Statuses whose sealed material is destroyed: not live, their access key is free again.
    DEAD_STATUSES = frozenset({Status.RETIRED, Status.DISCARDED})

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    environment = models.ForeignKey(Environment, models.CASCADE, related_name="key_registrations")
    version = models.PositiveIntegerField()
    kind = models.CharField(max_length=10, choices=Kind.choices)
    status = models.CharField(max_length=20, choices=Status.choices, db_index=True)
    # The status an inaccessible version returns to when access is restored.
    restore_status = models.CharField(max_length=20, choices=Status.choices, blank=True)

    # BYOK: what the customer registered.
    kms_key_arn = models.CharField("KMS key ARN", max_length=2048, blank=True)
    region = models.CharField("region code", max_length=32, blank=True)
    account_id = models.CharField(max_length=12, blank=True)
    encrypted_data_key = models.BinaryField(
        "encrypted data key", null=True, blank=True, editable=False,
        help_text="The KMS ciphertext blob, stored as is.",
    )
    encryption_context = models.JSONField(default=dict, blank=True)
    # How the platform reaches KMS: the sealed IAM credentials below, or AssumeRole on
    # role_arn with the environment's external ID (nothing of the customer's is stored).
    access_mode = models.CharField(max_length=12, choices=AccessMode.choices, default=AccessMode.ACCESS_KEY)
    role_arn = models.CharField("role ARN", max_length=2048, blank=True)
    sealed_access_key_id = models.TextField(blank=True, editable=False)
    sealed_secret_access_key = models.TextField(blank=True, editable=False)
    # Safe summaries of the access key ID: its last four characters, and a keyed digest
    # ("<sealing key id>$<HMAC-SHA256 hex>", keyed from that sealing key; keys.crypto.lookup_digest)
    # to catch the same access key registered twice and to find a version by its access key ID.
    access_key_id_last4 = models.CharField(max_length=4, blank=True)
    access_key_id_digest = models.CharField(max_length=100, blank=True, db_index=True)
    credentials_version = models.PositiveIntegerField(default=1)

    # Managed: the platform's data key, sealed by the sealing key.
    sealed_data_key = models.TextField(blank=True, editable=False)

    # Bumped on every change that must evict cached plaintext data keys in every process.
    generation = models.PositiveIntegerField(default=1)

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    # Periodic re-validation bookkeeping.
    last_verified_at = models.DateTimeField(null=True, blank=True)
    kms_unreachable_since = models.DateTimeField(null=True, blank=True)
    inaccessible_reason = models.CharField(max_length=40, blank=True)

    class Meta:
        ordering = ["environment", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["environment", "version"], name="one_row_per_key_version"),
            models.UniqueConstraint(
                fields=["environment"],
                condition=models.Q(status="active"),
                name="one_active_version_per_environment",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.environment} v{self.version} ({self.kind}, {self.status})"

    @property
    def is_byok(self) -> bool:
        return self.kind == self.Kind.BYOK

    @property
    def uses_role(self) -> bool:
        return self.access_mode == self.AccessMode.ROLE

    @property
    def masked_access_key_id(self) -> str:
        return ("•" * 16 + self.access_key_id_last4) if self.access_key_id_last4 else ""

    @property
    def is_editable(self) -> bool:
        """A BYOK version that never served (pending, failed, valid, never activated)."""
        return self.is_byok and self.status in self.EDITABLE_STATUSES and self.activated_at is None

    @property
    def is_live(self) -> bool:
        return self.status not in self.DEAD_STATUSES

    @property
    def can_be_activated(self) -> bool:
        """Only a version that passed validation can become active."""
        return self.status == self.Status.VALID

    @property
    def can_decrypt(self) -> bool:
        """Versions whose records the data plane may read."""
        return self.status in (self.Status.ACTIVE, self.Status.DECRYPT_ONLY)

    def can_move_to(self, status: str) -> bool:
        return status in self.TRANSITIONS.get(self.status, frozenset())


class ValidationRun(models.Model):
    """One validation of a registration against KMS, with every check's result.

    ``checks`` is a list of ``{"name", "label", "status", "aws_error_code", "cause",
    "remedy"}`` dicts, as produced by ``keys.diagnosis``.

    Outcomes: ``running`` while its job is queued or runs, then ``passed``, ``failed`` or
    ``unverified``. ``not_queued``: its job could not be queued (the broker was
    unreachable); the validation sweep (``keys.services.validation.validations_requeue``)
    queues it again, back to ``running``, and ends a run that no longer has anything to
    validate ``unverified`` with the reason ``not_run``. ``queued_at``: when its job was
    last queued (the sweep's clock for a run that stays ``running``).
    """

    class Trigger(models.TextChoices):
        REGISTRATION = "registration", "Registration"
        MANUAL = "manual", "Manual"
        PERIODIC = "periodic", "Periodic"
        CREDENTIALS = "credentials", "New credentials"

    class Outcome(models.TextChoices):
        RUNNING = "running", "Running"
        NOT_QUEUED = "not_queued", "Not queued"
        PASSED = "passed", "Passed"
        FAILED = "failed", "Failed"
        UNVERIFIED = "unverified", "Could not verify"

    registration = models.ForeignKey(KeyRegistration, models.CASCADE, related_name="validation_runs")
    trigger = models.CharField(max_length=20, choices=Trigger.choices)
    outcome = models.CharField(max_length=20, choices=Outcome.choices, default=Outcome.RUNNING)
    failure_reason = models.CharField(max_length=40, blank=True)
    checks = models.JSONField(default=list, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"{self.registration} {self.trigger} run: {self.outcome}"


class AuditEvent(models.Model):
    """Append-only record of a state change: actor, time, before and after.

    Never holds a secret: ``before``/``after`` carry statuses and safe summaries only.
    """

    class Action(models.TextChoices):
        REGISTRATION_CREATED = "registration_created", "Registration created"
        CREDENTIALS_REPLACED = "credentials_replaced", "Credentials replaced"
        REGISTRATION_EDITED = "registration_edited", "Registration edited"
        STATUS_CHANGED = "status_changed", "Status changed"
        VALIDATION_RUN = "validation_run", "Validation run"
        SEALING_KEY_ROTATED = "sealing_key_rotated", "Sealing key rotated"
        MATERIAL_DESTROYED = "material_destroyed", "Key material destroyed"
        API_KEY_CREATED = "api_key_created", "API key created"
        API_KEY_REVOKED = "api_key_revoked", "API key revoked"
        ENVIRONMENT_CREATED = "environment_created", "Environment created"
        REENCRYPTION = "reencryption", "Re-encryption"
        ORGANIZATION_CREATED = "organization_created", "Organization created"
        RECOVERY_CODES_GENERATED = "recovery_codes_generated", "Recovery codes generated"
        RECOVERY_CODE_USED = "recovery_code_used", "Recovery code used"
        TWO_FACTOR_DEVICE_ADDED = "two_factor_device_added", "Two-factor device added"
        TWO_FACTOR_DEVICE_REMOVED = "two_factor_device_removed", "Two-factor device removed"
        TWO_FACTOR_POLICY_CHANGED = "two_factor_policy_changed", "Two-factor policy changed"

    environment = models.ForeignKey(
        Environment, models.CASCADE, null=True, blank=True, related_name="audit_events"
    )
    registration = models.ForeignKey(
        KeyRegistration, models.SET_NULL, null=True, blank=True, related_name="audit_events"
    )
    action = models.CharField(max_length=40, choices=Action.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # Who did it when no user did: "job: validation", "job: periodic re-validation", "command: reseal".
    actor_label = models.CharField(max_length=100, blank=True)
    before = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=dict, blank=True)
    message = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.action} by {self.actor_name}"

    @property
    def actor_name(self) -> str:
        return str(self.actor) if self.actor_id else (self.actor_label or "system")

    def save(self, *args, **kwargs):
        if self.pk is not None and not kwargs.get("force_insert"):
            raise ValueError("Audit events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("Audit events are append-only.")


class Record(models.Model):
    """A customer's data item: ciphertext (our envelope format) and the key version that
    encrypted it. Unique per (environment, record key)."""

    # No index of their own: the unique (environment, record_key) index serves look-ups by
    # environment and record_by_version (registration, id) those by version. Each extra
    # index was one more insertion per record written (the batch write's cost is mostly
    # index maintenance: docs/architecture.md, "Speed of the data plane").
    environment = models.ForeignKey(Environment, models.CASCADE, related_name="records", db_index=False)
    record_key = models.CharField(max_length=255)
    ciphertext = models.BinaryField()
    registration = models.ForeignKey(KeyRegistration, models.PROTECT, related_name="records", db_index=False)
    key_version = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["environment", "record_key"], name="record_key_unique_in_env"),
        ]
        indexes = [models.Index(fields=["registration", "id"], name="record_by_version")]

    def __str__(self) -> str:
        return f"{self.environment} / {self.record_key} (v{self.key_version})"


class ApiKey(models.Model):
    """An application's credential for one environment's data-plane API.

    Shown once at creation as ``byok_<prefix>_<secret>``; only ``prefix`` and the SHA-256
    of the whole key are stored. ``form_token`` is the one-time token of the "Create API
    key" form that made it (``keys.services.api_keys.api_key_create``): unique in its
    environment, so a form submitted twice (a double-click, a resent POST) creates one key.
    """

    environment = models.ForeignKey(Environment, models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    form_token = models.UUIDField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["environment", "form_token"], name="apikey_form_token_once"),
        ]

    def __str__(self) -> str:
        return f"{self.name} (byok_{self.prefix}_…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class ReencryptionJob(models.Model):
    """Moving every record of an environment's older key versions to its active version
    (``keys.services.reencryption``), in batches, resumably.

    Allowed status transitions (enforced by ``keys.services.reencryption``)::

        queued    -> running | paused | cancelled
        running   -> queued     (end of a work slice: the job re-queues itself; or KMS was
                                 unreachable, retried later)
        running   -> done | failed | paused | cancelled
        paused    -> queued | cancelled
        failed    -> queued     ("Resume")

    A ``running`` job whose ``heartbeat_at`` is older than
    ``settings.REENCRYPTION_STALE_AFTER_SECONDS`` lost its worker (crash, SIGKILL): the
    periodic "resume stale jobs" task queues it again and the next runner takes it over.
    ``runner`` is the token of the task run that holds it: a batch commits only while the
    job is ``running`` under that token.

    Counters change in the same transaction as the records they count, so they stay exact
    across crashes. How many records remain per version is not stored: it is counted from
    ``Record`` (``keys.services.reencryption.job_progress``).
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        PAUSED = "paused", "Paused"
        CANCELLED = "cancelled", "Cancelled"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    UNFINISHED = (Status.QUEUED, Status.RUNNING, Status.PAUSED)

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    environment = models.ForeignKey(Environment, models.CASCADE, related_name="reencryption_jobs")
    # The version records are moved to: the environment's active version (followed if
    # another version is activated while the job runs).
    target = models.ForeignKey(KeyRegistration, models.CASCADE, related_name="reencryption_jobs")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED, db_index=True)
    runner = models.CharField(max_length=64, blank=True)

    # Records under other versions than the target when the job was created.
    records_total = models.PositiveIntegerField(default=0)
    records_moved = models.PositiveIntegerField(default=0)
    batches = models.PositiveIntegerField(default=0)
    # Versions whose records were skipped: {"<version>": "<reason>"} (inaccessible, …).
    skipped_versions = models.JSONField(default=dict, blank=True)
    # Ids of records that fail their integrity check under their own version: left as
    # they are, never selected again by this job.
    failed_record_ids = models.JSONField(default=list, blank=True)
    # Recent throughput (records per second, moving average), for the time-left estimate.
    records_per_second = models.FloatField(default=0.0)
    last_error = models.CharField(max_length=500, blank=True)

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Last sign of life: queued, claimed by a runner, or a batch committed.
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["environment"],
                condition=models.Q(status__in=["queued", "running", "paused"]),
                name="one_unfinished_reencryption_job_per_environment",
            ),
        ]

    def __str__(self) -> str:
        return f"Re-encryption of {self.environment} to v{self.target.version if self.target_id else '?'} ({self.status})"

    @property
    def is_unfinished(self) -> bool:
        return self.status in self.UNFINISHED

    @property
    def records_failed(self) -> int:
        return len(self.failed_record_ids)
