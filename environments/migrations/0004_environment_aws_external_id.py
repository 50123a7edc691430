"""Role mode (issue 14): one external ID per environment, distinct for every row.

Added nullable first, filled row by row with its own random value (a column default
would give every existing row the same one), then made unique and required.
"""

from django.db import migrations, models

import environments.models


def fill_external_ids(apps, schema_editor):
    Environment = apps.get_model("environments", "Environment")
    for environment in Environment.objects.filter(aws_external_id__isnull=True).only("pk"):
        Environment.objects.filter(pk=environment.pk).update(aws_external_id=environments.models.new_external_id())


class Migration(migrations.Migration):
    dependencies = [("environments", "0003_environment_name_case_insensitive")]

    operations = [
        migrations.AddField(
            model_name="environment",
            name="aws_external_id",
            field=models.CharField(editable=False, max_length=64, null=True, verbose_name="external ID"),
        ),
        migrations.RunPython(fill_external_ids, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="environment",
            name="aws_external_id",
            field=models.CharField(
                default=environments.models.new_external_id,
                editable=False,
                max_length=64,
                unique=True,
                verbose_name="external ID",
            ),
        ),
    ]
