"""Drop the two single-column indexes Django made for Record's foreign keys: the unique
(environment, record_key) index already serves look-ups by environment, and
record_by_version (registration, id) those by key version. Each was one more index
insertion for every record written (keys/models.py, Record).

Only the indexes go (DROP INDEX: no table scan). Django's own AlterField(db_index=False)
would also drop and re-add the foreign key constraints, which validates every record under
a lock. The index names are the ones Django gave them (its deterministic naming, the same
on PostgreSQL and SQLite)."""

import django.db.models.deletion
from django.db import migrations, models

INDEXES = {
    "keys_record_environment_id_ed0aef91": "environment_id",
    "keys_record_registration_id_b82987e6": "registration_id",
}


class Migration(migrations.Migration):
    dependencies = [
        ("environments", "0004_environment_aws_external_id"),
        ("keys", "0009_validation_run_not_queued"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="record",
                    name="environment",
                    field=models.ForeignKey(
                        db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name="records",
                        to="environments.environment",
                    ),
                ),
                migrations.AlterField(
                    model_name="record",
                    name="registration",
                    field=models.ForeignKey(
                        db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name="records",
                        to="keys.keyregistration",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    sql=f'DROP INDEX IF EXISTS "{name}"',
                    reverse_sql=f'CREATE INDEX IF NOT EXISTS "{name}" ON "keys_record" ("{column}")',
                )
                for name, column in INDEXES.items()
            ],
        ),
    ]
