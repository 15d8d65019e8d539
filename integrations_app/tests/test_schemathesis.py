"""Property-based fuzzing of the integrations, routes and secrets endpoints from /api/schema/.

Schemathesis generates requests (valid and invalid) from the OpenAPI schema and sends them to the
Django WSGI application in-process, authenticated with a full-scope key of a tenant. Whatever it
sends, the answer must never be a server error.
"""

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error

from backflow.wsgi import application
from integrations_app import services
from integrations_app.stores import DatabaseStore

# Real commits (no test-wide transaction around the requests): the service layer's own
# transactions and constraint handling run as in production.
pytestmark = pytest.mark.django_db(transaction=True)

schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application).include(
    path_regex=r"^/api/(integrations|routes|secrets)/"
)


def _seed(ctx):
    """Some records, so lists have content and valid references exist for generated routes."""
    store = DatabaseStore(tenant=ctx.tenant, actor=ctx.actor)
    services.integration_create(store=store, document={
        "name": "stripe", "baseUrl": "https://api.stripe.com/v1", "auth": {"type": "bearer", "secret": "stripe_key"},
        "endpoints": [{"name": "listCharges", "method": "get", "path": "/charges"}],
    })
    route = services.route_create(store=store, document={
        "path": "/charges", "method": "get",
        "integrations": {"actions": [{"integration": "stripe", "action": "listCharges"}]},
    })
    services.secret_create(tenant=ctx.tenant, actor=ctx.actor, name="stripe_key", value="sk_test_fuzz")
    return {
        "/api/integrations/{name}/": {"name": "stripe"},
        "/api/routes/{id}/": {"id": route["id"]},
        "/api/secrets/{name}/": {"name": "stripe_key"},
    }


@pytest.fixture(autouse=True)
def _keep_connection():
    """Like Django's test client: the WSGI handler would otherwise drop and reopen the database
    connection around every request, which costs more than the requests themselves."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


def test_schema_covers_the_fuzzed_endpoints():
    operations = {f"{op.ok().method.upper()} {op.ok().path}" for op in schema.get_all_operations()}
    for resource in ("integrations", "routes", "secrets"):
        assert f"GET /api/{resource}/" in operations and f"POST /api/{resource}/" in operations
        assert any(o.startswith("DELETE /api/" + resource + "/{") for o in operations), operations
    assert len(operations) == 18, operations


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same examples every run: a failure here is reproducible
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors(case, acme):
    if not hasattr(acme, "existing"):
        acme.existing = _seed(acme)
    if case.method in ("PUT", "PATCH") and case.path in acme.existing:
        # Random names are almost always 404: send the generated bodies to a record that exists.
        case.path_parameters = dict(acme.existing[case.path])
    case.call_and_validate(headers={"Authorization": f"Bearer {acme.key}"}, checks=[not_a_server_error])
