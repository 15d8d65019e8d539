"""Property-based fuzzing of every operation in /api/schema/: never a server error.

Schemathesis generates requests from the OpenAPI schema, valid and invalid (its positive and
negative modes), and sends them to the Django WSGI application in-process. Each operation gets a
tenant of its own with one record of every kind (tests/isolation.py), and half its cases address
those records, so paths resolve and writes reach the service layer instead of stopping at 404.
Requests carry a full-scope API key; key and OAuth-connection management carry an owner's JWT
(only owners and admins may), and the sign-in endpoints nothing.

It proves, for every operation:
- no 5xx, except where the contract answers an upstream failure (the MCP servers a tenant
  registered) with 502/504 and a JSON `detail`;
- a 400 names what to fix: `{"detail": "...", "errors": {"field.path": ["..."]}}`;
- the schema itself is sound: each path parameter is part of its path.
Nothing runs beyond the request: queued runs wait for a worker that no test starts (and `?wait`
is cut short), the egress guard refuses loopback and private addresses (the seeded MCP server
is on loopback), and no MCP server the fuzz registers can be stdio, which would run a program:
the tenant's servers are checked after each operation's fuzz.
The regression tests at the end pin what the fuzz (and probes around what it found) turned up.
"""

import re

import anyio
import httpx
import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from django.test import Client
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from backflow import asgi
from backflow.wsgi import application
from tests.isolation import (
    make_api_key,
    make_app,
    make_audit_event,
    make_collection,
    make_entity,
    make_integration,
    make_oauth_grant,
    make_route,
    make_run,
    make_secret,
    make_workflow,
)
from workflows_app import services as workflow_services
from workflows_app.documents import MAX_WAIT
from workflows_app.models import McpServer

schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)
OPERATIONS = sorted((op.ok() for op in schema.get_all_operations()), key=lambda op: op.label)
FUZZ = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,  # the same examples every run: a failure here is reproducible
    database=None,
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),  # slow by nature (a request each), and fed by fixtures
)
JWT_PATHS = ("/api/keys/", "/api/oauth-authorizations/")  # owners and admins only, signed in
ANONYMOUS_PATHS = ("/api/auth/",)
# The contract answers a registered MCP server's failure (here: refused by the egress guard) with 502/504.
UPSTREAM_OPERATIONS = {"GET /agent/mcp/servers/{name}/tools", "POST /agent/mcp/execute"}


def seed(ctx):
    """One record of each kind; returns the path parameters that address them, by path."""
    integration = make_integration(ctx, "crm")
    route = make_route(ctx, "crm-sync")
    secret = make_secret(ctx, "crm-token")
    key = make_api_key(ctx, "spare")
    event = make_audit_event(ctx, "seeded")
    collection = make_collection(ctx, "members")
    entity = make_entity(ctx, "acme-notes")
    app = make_app(ctx, "studio")
    workflow = make_workflow(ctx, "wf")
    run = make_run(ctx, "wf-run")
    grant = make_oauth_grant(ctx, "connected")
    # On loopback, which the egress guard refuses: connecting to it fails at once, offline or not.
    workflow_services.mcp_server_create(tenant=ctx.tenant, actor=ctx.actor, document={
        "name": "peer", "transport": "http", "url": "http://127.0.0.1:9/mcp"})
    entity_path = {"collection_name": entity.detail_kwargs["collection_name"], "id": entity.detail_kwargs["pk"]}
    return {
        "/agent/mcp/servers/{name}/tools": {"name": "peer"},
        "/api/apps/{slug}/": app.detail_kwargs,
        "/api/audit/{id}/": {"id": event.detail_kwargs["pk"]},
        "/api/collections/{name}/": collection.detail_kwargs,
        "/api/collections/{collection_name}/entities/": {"collection_name": entity_path["collection_name"]},
        "/api/collections/{collection_name}/entities/{id}/": entity_path,
        "/api/integrations/{name}/": integration.detail_kwargs,
        "/api/keys/{prefix}/": key.detail_kwargs,
        "/api/mcp-servers/{name}/": {"name": "peer"},
        "/api/oauth-authorizations/{id}/": {"id": grant.detail_kwargs["pk"]},
        "/api/routes/{id}/": {"id": route.detail_kwargs["pk"]},
        "/api/runs/{id}/": {"id": run.detail_kwargs["pk"]},
        "/api/runs/{id}/cancel/": {"id": run.detail_kwargs["pk"]},
        "/api/secrets/{name}/": secret.detail_kwargs,
        "/api/workflows/{slug}/": workflow.detail_kwargs,
        "/api/workflows/{slug}/runs/": workflow.detail_kwargs,
    }


@schemathesis.check
def a_400_names_what_to_fix(ctx, response, case):
    """The contract: 400 with a JSON body naming each bad field."""
    if response.status_code != 400:
        return
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("detail"), str) and body["detail"], f"400 without a detail: {body}"
    errors = body.get("errors")
    assert isinstance(errors, dict) and errors, f"400 naming no field: {body}"
    assert all(isinstance(messages, list) and messages and all(isinstance(m, str) and m for m in messages)
               for messages in errors.values()), f"400 with malformed errors: {body}"


@schemathesis.check
def not_a_server_error_but_upstream(ctx, response, case):
    """502/504 with a JSON detail is the contract's answer to an upstream failure; any other 5xx is a bug."""
    if response.status_code in (502, 504) and isinstance(response.json().get("detail"), str):
        return None
    return not_a_server_error(ctx, response, case)


def _short_wait(case):
    # A run waits for a worker that never comes: a valid ?wait would just sleep. Invalid ones still go.
    wait = (case.query or {}).get("wait")
    if isinstance(wait, (int, float)) and not isinstance(wait, bool) and 0 < wait <= MAX_WAIT:
        case.query["wait"] = 0
    return case


def cases(operation, path_parameters):
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    strategies = [operation.as_strategy(mode) for mode in modes]
    if path_parameters:
        strategies += [operation.as_strategy(mode, path_parameters=path_parameters) for mode in modes]
    return st.one_of(strategies).map(_short_wait)


def headers_for(operation, ctx):
    if operation.path.startswith(ANONYMOUS_PATHS):
        return {}
    credential = ctx.jwt() if operation.path.startswith(JWT_PATHS) else ctx.key
    return {"Authorization": f"Bearer {credential}"}


def fuzz(operation, path_parameters, headers):
    checks = [not_a_server_error_but_upstream if operation.label in UPSTREAM_OPERATIONS else not_a_server_error,
              a_400_names_what_to_fix]

    @FUZZ
    @given(cases(operation, path_parameters))
    def one_request(case):
        case.call_and_validate(headers=headers, checks=checks)

    one_request()


@pytest.fixture(autouse=True)
def _keep_connection():
    """Like Django's test client: the WSGI handler would otherwise drop and reopen the database
    connection around every request, which costs more than the requests themselves."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


def test_the_schema_names_each_path_parameter_in_its_path():
    for operation in OPERATIONS:
        named = set(re.findall(r"{(\w+)}", operation.path))
        declared = {p.name for p in operation.path_parameters}
        assert declared == named, (operation.label, declared, named)


def test_the_fuzz_covers_every_operation():
    assert len(OPERATIONS) > 60
    resources = {op.path.split("/")[2] for op in OPERATIONS}
    assert resources >= {"apps", "audit", "auth", "collections", "integrations", "keys", "mcp-servers",
                         "oauth-authorizations", "routes", "runs", "secrets", "workflows", "mcp"}, resources


@pytest.mark.django_db(transaction=True)  # real commits: the service layer's transactions and constraints run as in production
def test_no_operation_answers_a_server_error(as_tenant, settings, subtests):
    settings.BACKFLOW_EGRESS_ALLOW = []
    # One test, a tenant per operation: each meets the seeds as made, and the database is emptied
    # once (on PostgreSQL that flush costs more than an operation's whole fuzz).
    for index, operation in enumerate(OPERATIONS):
        with subtests.test(operation=operation.label):
            ctx = as_tenant(f"api{index}")
            fuzz(operation, seed(ctx).get(operation.path), headers_for(operation, ctx))
            assert not McpServer.objects.for_tenant(ctx.tenant).filter(transport=McpServer.Transport.STDIO).exists()


# -- regressions ------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_moments_with_offsets_postgres_refuses_are_compared_in_utc(acme):
    """ISO 8601 allows UTC offsets up to ±23:59, PostgreSQL only ±15:59: `?since=…-20:57` on the
    audit log (and such a createdAt filter on entities) was a 500 there."""
    api = acme.client()
    make_entity(acme, "acme-notes")
    assert api.get("/api/audit/", {"since": "0895-01-11T11:12:54-20:57"}).status_code == 200
    beyond_year_1 = api.get("/api/audit/", {"until": "0001-01-01T00:00:00+01:00"})
    assert beyond_year_1.status_code == 400 and "until" in beyond_year_1.json()["errors"]
    filters = '{"createdAt": {"gte": "2026-01-01T00:00:00+20:57"}}'
    assert api.get("/api/collections/shared-notes/entities/", {"filters": filters}).status_code == 200


@pytest.mark.django_db
def test_a_nul_character_in_a_path_is_a_400(acme):
    """A NUL (%00) in a path reached PostgreSQL in the view's lookup: a 500 on every detail endpoint."""
    seeds = seed(acme)
    api = acme.client()
    for template in seeds:
        if template.startswith("/api/"):
            path = re.sub(r"{\w+}", "a%00b", template)
            answer = api.get(path)
            assert answer.status_code == 400 and answer.json()["errors"]["path"], (path, answer.content)
    assert api.get("/apps/acme/a%00b/").status_code == 400


def test_a_nul_character_in_a_path_is_a_400_before_routes_and_mcp():
    """The same for the ASGI apps beside Django: tenant routes (/t/) and MCP (/mcp/)."""

    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi.application), base_url="http://localhost") as http:
            return [await http.get(path) for path in ("/t/a%00b/x", "/t/acme/x%00y", "/mcp/sse%00")]

    for answer in anyio.run(main):
        assert answer.status_code == 400 and "NUL" in answer.json()["error"], answer.text


@pytest.mark.django_db
def test_a_nul_character_in_a_webhook_payload_is_a_400(acme):
    """The payload becomes the run's input, stored as JSON: PostgreSQL refuses a NUL there (a 500)."""
    workflow = workflow_services.workflow_update(tenant=acme.tenant, actor=acme.actor, slug=make_workflow(acme, "wf").obj.slug,
                                                 changes={"triggers": [{"type": "webhook"}]})
    answer = Client().post(workflow.to_document()["webhookUrl"], '{"note": "a\\u0000b"}', content_type="application/json")
    assert answer.status_code == 400 and "input.note" in answer.json()["errors"], answer.content


@pytest.mark.django_db
def test_a_malformed_page_is_a_400_naming_it(acme):
    """DRF answered `?page=abc` with 404 "Invalid page." and ignored `?page_size=abc`; the contract
    says bad input is a 400 naming the field. A page past the last one is still a 404."""
    api = acme.client()
    for query, field in (({"page": "abc"}, "page"), ({"page": "0"}, "page"), ({"page_size": "-5"}, "page_size"),
                         ({"page_size": "²"}, "page_size")):
        answer = api.get("/api/apps/", query)
        assert answer.status_code == 400 and field in answer.json()["errors"], (query, answer.content)
    assert api.get("/api/apps/", {"page": "last"}).status_code == 200
    assert api.get("/api/apps/", {"page": "2"}).status_code == 404


@pytest.mark.django_db
def test_a_nul_character_in_a_body_is_named_the_same_on_every_json_door(acme):
    """Serializer-validated bodies (secrets) answered DRF's 'Null characters are not allowed.';
    schema-validated ones (integrations) named the field with the documented message."""
    api = acme.client()
    nul = "contains a NUL character (\\u0000), which cannot be stored; remove it."
    for path, body, field in (
        ("/api/secrets/", {"name": "s", "value": "a\x00b"}, "value"),
        ("/api/secrets/", {"name": "s", "value": "v", "description": "a\x00"}, "description"),
        ("/api/integrations/", {"name": "i", "baseUrl": "https://x.example", "description": "\x00"}, "description"),
    ):
        answer = api.post(path, body, format="json")
        assert answer.status_code == 400 and answer.json()["errors"][field] == [nul], (path, answer.content)
    assert api.get("/api/secrets/").json()["results"] == []
