"""`manage.py seed_demo`: import the demo facility file and create one user per role.

Passwords are generated on every run and printed once; none is stored anywhere but the database.
"""

import secrets
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from facility import facility_file
from facility.roles import ROLES

DEMO_FILE = Path(__file__).resolve().parents[2] / "demo_facility.yaml"


class Command(BaseCommand):
    help = "Load the demo facility (facility/demo_facility.yaml) and create a user per role."

    def add_arguments(self, parser):
        parser.add_argument("--file", default=str(DEMO_FILE), help="Facility file to load instead of the demo.")
        parser.add_argument("--no-users", action="store_true", help="Load the facility only.")

    def handle(self, *args, file, no_users, **options):
        try:
            doc = facility_file.parse(Path(file).read_text(encoding="utf-8"))
            report = facility_file.import_facility(doc)
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc.strerror}") from None
        except facility_file.FacilityFileError as exc:
            raise CommandError(f"{file}: " + "; ".join(exc.errors)) from None
        gpus = sum(len(n.gpus) for h in doc.halls for r in h.racks for n in r.nodes)
        state = "loaded" if report.changed else "already loaded"
        self.stdout.write(f"Facility {doc.site.slug!r} {state}: {len(doc.halls)} halls, {gpus} GPUs.")
        if no_users:
            return
        self.stdout.write("Demo logins (new passwords each run; shown only now):")
        for role, password in self._create_users().items():
            self.stdout.write(f"  {role:<9} {password}")

    @transaction.atomic
    def _create_users(self) -> dict[str, str]:
        User = get_user_model()
        logins = {}
        for role in ROLES:
            group = Group.objects.filter(name=role).first()
            if group is None:
                raise CommandError(f"role group {role!r} missing: run `manage.py migrate` first")
            user, _ = User.objects.get_or_create(username=role)
            password = secrets.token_urlsafe(12)
            user.set_password(password)
            # Every role may open the admin: it shows each user only what their permissions allow.
            user.is_staff = True
            user.save()
            user.groups.set([group])
            logins[role] = password
        return logins
