# Environment names become unique per organization in any letter case.

import django.db.models.functions.text
from django.conf import settings
from django.db import migrations, models


def rename_case_duplicates(apps, schema_editor):
    """Before the case-insensitive index: an environment whose name differs from an older
    one of its organization only in letter case (a race past the old check) is renamed
    "<name> (2)", "<name> (3)", … so the index can be built and nothing is lost."""
    Environment = apps.get_model("environments", "Environment")
    seen: dict[tuple[int, str], int] = {}
    for environment in Environment.objects.order_by("organization_id", "created_at", "pk"):
        key = (environment.organization_id, environment.name.lower())
        if key not in seen:
            seen[key] = 1
            continue
        while True:
            seen[key] += 1
            candidate = f"{environment.name} ({seen[key]})"[:100]
            if (environment.organization_id, candidate.lower()) not in seen:
                break
        seen[(environment.organization_id, candidate.lower())] = 1
        Environment.objects.filter(pk=environment.pk).update(name=candidate)


class Migration(migrations.Migration):

    dependencies = [
        ('environments', '0002_organization_require_two_factor'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RunPython(rename_case_duplicates, migrations.RunPython.noop),
        migrations.RemoveConstraint(
            model_name='environment',
            name='env_name_unique_in_org',
        ),
        migrations.AddConstraint(
            model_name='environment',
            constraint=models.UniqueConstraint(models.F('organization'), django.db.models.functions.text.Lower('name'), name='env_name_ci_unique_in_org'),
        ),
    ]
