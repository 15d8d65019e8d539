from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from backflow.errors import ServiceError
from tenants import selectors, services
from tenants.principals import Principal
from tenants.scopes import ALL_SCOPES


class Command(BaseCommand):
    help = "Create an API key for a tenant and print it, alone, on stdout (only its hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("slug", help="Tenant slug")
        parser.add_argument("--name", default="cli", help="A name to recognise the key by")
        parser.add_argument("--scope", action="append", dest="scopes", default=[], metavar="SCOPE",
                            help=f"Repeat for several; default all. One of: {', '.join(ALL_SCOPES)}")
        parser.add_argument("--expires-days", type=int, default=None, help="Expire after this many days")

    def handle(self, slug, name, scopes, expires_days, **options):
        tenant = selectors.tenant_get(slug=slug)
        if tenant is None:
            raise CommandError(f"No tenant {slug!r}; create it with `manage.py create_tenant {slug}`.")
        if expires_days is not None and expires_days < 1:
            raise CommandError("--expires-days must be at least 1.")
        expires_at = timezone.now() + timedelta(days=expires_days) if expires_days else None
        try:
            _, plaintext = services.api_key_create(
                tenant=tenant, actor=Principal.system(tenant, "create_api_key"), name=name,
                scopes=scopes, expires_at=expires_at,
            )
        except ServiceError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(plaintext)
