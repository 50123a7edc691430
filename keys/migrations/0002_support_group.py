"""Create the "support" group: view-only permissions on tenancy and key models."""

from django.db import migrations

SUPPORT_MODELS = {
    "environments": ["organization", "membership", "environment"],
    "keys": ["keyregistration", "validationrun", "auditevent", "apikey"],
}


def create_support_group(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name="support")
    codenames = [f"view_{m}" for models in SUPPORT_MODELS.values() for m in models]
    perms = Permission.objects.filter(
        codename__in=codenames, content_type__app_label__in=list(SUPPORT_MODELS)
    )
    group.permissions.set(perms)


def remove_support_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name="support").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("keys", "0001_initial"),
        ("environments", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_support_group, remove_support_group)]
