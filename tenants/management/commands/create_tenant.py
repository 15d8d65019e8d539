from django.core.management.base import BaseCommand, CommandError

from backflow.errors import ServiceError
from tenants import services


class Command(BaseCommand):
    help = "Create a tenant."

    def add_arguments(self, parser):
        parser.add_argument("slug", help="Lower-case letters, digits and '-', e.g. acme")
        parser.add_argument("--name", default="", help="Display name (default: the slug)")

    def handle(self, slug, name, **options):
        try:
            tenant = services.tenant_create(slug=slug, name=name)
        except ServiceError as exc:
            raise CommandError(str(exc)) from exc
        self.stderr.write(f"Created tenant {tenant.slug!r}.")
