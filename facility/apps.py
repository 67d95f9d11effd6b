from django.apps import AppConfig, apps
from django.db.models.signals import post_migrate


def _sync_roles_after_migrate(sender, using="default", **kwargs):
    from django.contrib.auth.management import create_permissions

    from facility.roles import sync_roles

    # post_migrate reaches facility before the apps listed after it; create everyone's permissions
    # first (idempotent) so the roles get them in the same migrate.
    for app_config in apps.get_app_configs():
        create_permissions(app_config, verbosity=0, using=using)
    sync_roles(apps, apps.get_app_configs())


class FacilityConfig(AppConfig):
    name = "facility"
    verbose_name = "Facility inventory"

    def ready(self):
        from facility.api import auth  # noqa: F401 — registers the OpenAPI description of API tokens

        post_migrate.connect(_sync_roles_after_migrate, sender=self, dispatch_uid="facility.sync_roles")
