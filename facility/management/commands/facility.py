"""`manage.py facility import FILE` and `manage.py facility export [--site SLUG] [-o FILE]`."""

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from facility import facility_file
from facility.models import Site


class Command(BaseCommand):
    help = "Import or export a whole facility (site) as a YAML facility file."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        imp = actions.add_parser("import", help="Validate a facility file and write it, all or nothing.")
        imp.add_argument("file", help="Path of the YAML file, or - for standard input.")
        imp.add_argument("--check", action="store_true", help="Validate only; write nothing.")
        exp = actions.add_parser("export", help="Print a site as a facility file.")
        exp.add_argument("--site", help="Site slug (needed when there is more than one site).")
        exp.add_argument("-o", "--output", help="Write to this file instead of standard output.")

    def handle(self, *args, action, **options):
        if action == "import":
            self._import(options["file"], check=options["check"])
        else:
            self._export(options["site"], options["output"])

    def _import(self, path: str, check: bool):
        if path == "-":
            text = sys.stdin.read()
        else:
            try:
                text = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise CommandError(f"cannot read {path}: {exc.strerror}") from None
        try:
            doc = facility_file.parse(text)
            if check:
                self.stdout.write(self.style.SUCCESS(f"{path}: valid ({doc.site.slug})"))
                return
            report = facility_file.import_facility(doc)
        except facility_file.FacilityFileError as exc:
            lines = "\n".join(f"  {e}" for e in exc.errors)
            raise CommandError(f"{path}: {len(exc.errors)} error(s), nothing imported:\n{lines}") from None
        for line in report.lines():
            self.stdout.write(line)
        verdict = "imported" if report.changed else "already up to date, nothing changed"
        self.stdout.write(self.style.SUCCESS(f"{doc.site.slug}: {verdict}"))

    def _export(self, slug: str | None, output: str | None):
        sites = Site.objects.all()
        if slug:
            sites = sites.filter(slug=slug)
        if not sites:
            raise CommandError(f"no site {slug!r}" if slug else "no site to export; import or seed one first")
        if len(sites) > 1:
            raise CommandError(f"several sites ({', '.join(s.slug for s in sites)}): choose one with --site")
        text = facility_file.dump(facility_file.export_facility(sites[0]))
        if output:
            Path(output).write_text(text, encoding="utf-8")
        else:
            self.stdout.write(text, ending="")
