"""Roles as Django groups: viewer, operator, approver, admin (DESIGN.md, Roles).

Each app declares what its roles may do in its own `roles.py` as `ROLE_PERMISSIONS`, a mapping of role
to permission patterns (`app_label.codename`, with `*` wildcards). `sync_roles` gathers them from every
installed app and makes the groups match; it runs from a data migration and after every `migrate`, so a
later app's permissions join the groups as soon as its tables exist.
"""

from fnmatch import fnmatchcase
from importlib import import_module

ROLES = ("viewer", "operator", "approver", "admin")

# Every role reads the whole product; the higher roles add what they may do on top.
_READ = ["facility.view_*", "telemetry.view_*", "inference.view_*", "control.view_*"]

ROLE_PERMISSIONS = {
    "viewer": _READ,
    "operator": _READ,
    "approver": _READ,
    # Admins edit the inventory and envelopes, and manage users.
    "admin": [
        *_READ,
        "facility.*",
        "auth.view_user", "auth.add_user", "auth.change_user", "auth.delete_user",
        "auth.view_group",
    ],
}


def declared_permissions(app_configs) -> dict[str, set[str]]:
    """Patterns per role from every installed app's roles module (facility's own included)."""
    declared: dict[str, set[str]] = {role: set() for role in ROLES}
    for app_config in app_configs:
        try:
            module = import_module(f"{app_config.name}.roles")
        except ModuleNotFoundError as exc:
            if exc.name != f"{app_config.name}.roles":
                raise
            continue
        for role, patterns in getattr(module, "ROLE_PERMISSIONS", {}).items():
            if role not in declared:
                raise ValueError(f"{app_config.name}.roles names unknown role {role!r}")
            declared[role].update(patterns)
    return declared


def sync_roles(apps, app_configs) -> None:
    """Make each role group hold exactly the permissions its patterns match among those that exist.

    `apps` is the model registry (historical in migrations); `app_configs` the real installed apps.
    """
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    existing = {
        f"{app_label}.{codename}": pk
        for pk, app_label, codename in Permission.objects.values_list("pk", "content_type__app_label", "codename")
    }
    for role, patterns in declared_permissions(app_configs).items():
        group, _ = Group.objects.get_or_create(name=role)
        wanted = {pk for name, pk in existing.items() if any(fnmatchcase(name, p) for p in patterns)}
        if set(group.permissions.values_list("pk", flat=True)) != wanted:
            group.permissions.set(wanted)
