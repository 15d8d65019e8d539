"""Fuzz every MCP tool's arguments, generated from the inputSchema the server publishes.

The server is the one mcp_app.server builds for every transport, reached in this process by the
SDK's own client over its in-memory transport: a tenant connection with a full-scope API key (the
remote one, as mcp_app.http makes it) and a local-mode connection on a seed-style folder. One
session per tool takes all its examples, as a long-lived assistant's would. Hypothesis sends
arguments drawn from the tool's published inputSchema, some aimed at records that exist, some with
one string anywhere in them swapped for a NUL-holding, huge or odd one, and arguments that break
the schema: Schemathesis' negative cases, a required field dropped, an unknown field, a field of
the wrong type, arbitrary objects of nulls, numbers and strings. The generators are Schemathesis'
(the inputSchema as one OpenAPI operation's body): hypothesis-jsonschema 0.23.1, the newest,
fails on every object schema with this Hypothesis (6.170's `many` has no `more()`).

It proves, for every tool:
- nothing crashes: every answer is a tool result whose text is the JSON of its structuredContent,
  and none is the server's catch-all ("failed unexpectedly") or shows a traceback or a file path;
- every failure is `isError` with {"error": "..."}; whatever the published schema refuses is
  refused, naming the fields to fix ("errors");
- nothing hangs (each call has a read timeout) and the session still lists the tools afterwards;
- every call, refused ones too, left its audit event;
- no half-written record: every stored integration, route, collection, entity, app and workflow
  (every local file) still passes the validation its writes go through, unchanged by it.
The regression tests at the end pin what the fuzz found.
"""

from contextlib import contextmanager

import hypothesis
import pytest
from anyio.from_thread import start_blocking_portal
from asgiref.sync import sync_to_async
from django.db import connections
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from mcp import Client
from schemathesis import GenerationMode
from schemathesis.openapi import from_dict

from backflow.validation import public_schema
from entities_app import services as entity_services
from entities_app.documents import clean_app, clean_collection
from entities_app.models import App, Collection, Entity
from integrations_app import services as integration_services
from integrations_app.documents import READ_ONLY_FIELDS, clean_integration, clean_route
from integrations_app.file_store import FileStore
from integrations_app.models import RouteInvocation
from integrations_app.stores import DatabaseStore
from mcp_app.context import ToolContext
from mcp_app.http import connection_for
from mcp_app.local_config import load_local_config
from mcp_app.registry import REGISTRY, visible_tools
from mcp_app.server import CONNECTION, build_server
from mcp_app.tests.helpers import LOCAL_TOOLS, TOOLS_BY_SCOPE, LocalSite, result_json, tools_for
from tenants.authentication import principal_for_token
from tenants.models import AuditEvent
from tenants.scopes import ALL_SCOPES
from tests.isolation import make_app, make_entity, make_integration, make_mcp_server, make_route, make_run, make_secret, make_workflow
from workflows_app import services as workflow_services
from workflows_app.documents import clean_workflow
from workflows_app.models import McpServer, Workflow

TENANT_TOOLS = sorted(visible_tools(scopes=ALL_SCOPES))
CALL_TIMEOUT = 20  # seconds: a call still unanswered by then is a hang
FUZZ = hypothesis.settings(
    max_examples=30,
    deadline=None,  # calls reach the database; their time varies with the machine
    derandomize=True,  # the same examples every run: a failure here is reproducible
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                           HealthCheck.large_base_example],
)
# What only a crash or a leak puts in a tool result (the server's catch-all says "failed unexpectedly").
LEAKS = ("failed unexpectedly", "Traceback", 'File "/', "site-packages", "psycopg", "sqlite3", "IntegrityError", "DataError")

ODD_STRINGS = [
    "", " ", "e\u0301\u202e\u200b", "../../etc/passwd", "/", "//", "{{env.SECRET_KEY}}", "{{steps.x.result}}", "{{", "}}",
    "' OR 1=1 --", "<script>alert(1)</script>", "null", "-1", "1e999", "__proto__", "data__contains", "GET",
    "https://127.0.0.1:8000/", "bf_abcdefgh_secret",
]
HUGE_STRINGS = st.sampled_from(["x", "🙂", "\x00"]).map(lambda char: char * 100_000)  # built lazily: short reprs
# NUL passes JSON and the SDK, but not a PostgreSQL text or JSON column.
NASTY_STRINGS = st.sampled_from(["\x00", "a\x00b"]) | st.sampled_from(ODD_STRINGS) | HUGE_STRINGS
SCALARS = (st.none() | st.booleans() | st.integers() | st.sampled_from([2**63, -(2**63) - 1, 10**40])
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30) | NASTY_STRINGS)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12) | NASTY_STRINGS, inner, max_size=4),
    max_leaves=10,
)


# -- the session ------------------------------------------------------------------------------------

async def _as_connection(ctx, method, *args):
    # The transports set CONNECTION in the task that delivers a message, and the SDK runs the
    # handler in the sending task's context: here, the portal task that sends.
    CONNECTION.set(ctx)
    return await method(*args)


class Session:
    """The SDK client's session, driven from this synchronous test through an anyio portal."""

    def __init__(self, portal, client, ctx):
        self.portal, self.client, self.ctx = portal, client, ctx
        self.calls = 0

    def tools(self):
        listed = self.portal.call(_as_connection, self.ctx, self.client.list_tools)
        return {tool.name: tool for tool in listed.tools}

    def call(self, name, arguments):
        self.calls += 1
        return self.portal.call(_as_connection, self.ctx, self.client.call_tool, name, arguments)


@contextmanager
def fuzz_session(ctx):
    """A Session on a new server for the connection `ctx` (a ToolContext)."""
    with start_blocking_portal() as portal:
        client = Client(build_server(), mode="legacy", read_timeout_seconds=CALL_TIMEOUT)
        try:
            with portal.wrap_async_context_manager(client) as connected:
                yield Session(portal, connected, ctx)
        finally:
            # Tool calls run on one sync thread that keeps its database connection between calls;
            # left open, it stops PostgreSQL from dropping the test database at the end.
            portal.call(sync_to_async(connections.close_all, thread_sensitive=True))


# -- arguments --------------------------------------------------------------------------------------

def generated(schema, mode):
    """Schemathesis' cases of `mode` for a JSON body of this schema."""
    operation = {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
                 "responses": {"200": {"description": "OK"}}}
    api = from_dict({"openapi": "3.1.0", "info": {"title": "tool", "version": "1"}, "paths": {"/tool": {"post": operation}}})
    # Negative cases include non-JSON bodies; MCP arguments are always an object.
    return api["/tool"]["POST"].as_strategy(mode).map(lambda case: case.body).filter(lambda body: isinstance(body, dict))


@st.composite
def aimed(draw, valid, aims):
    """Valid arguments whose identifying fields name a record that exists."""
    args = draw(valid)
    target = draw(st.sampled_from(aims))
    return {**args, **{key: value for key, value in target.items() if key in args}}


def _string_paths(value, path=()):
    if isinstance(value, str):
        yield path
    elif isinstance(value, (dict, list)):
        for key, item in (value.items() if isinstance(value, dict) else enumerate(value)):
            yield from _string_paths(item, (*path, key))


def _replaced(value, path, new):
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replaced(value[path[0]], path[1:], new)
    return copy


@st.composite
def tainted(draw, base):
    """Arguments with one string, anywhere in them, swapped for a NUL-holding, huge or odd one."""
    args = draw(base)
    paths = list(_string_paths(args))
    return _replaced(args, draw(st.sampled_from(paths)), draw(NASTY_STRINGS)) if paths else args


@st.composite
def broken(draw, valid, schema):
    """Valid arguments with one change that the schema may refuse."""
    args = dict(draw(valid))
    properties, required = sorted(schema.get("properties", {})), schema.get("required", [])
    change = draw(st.sampled_from(["drop", "retype", "extra"]))
    if change == "drop" and required:
        del args[draw(st.sampled_from(required))]
    elif change == "retype" and properties:
        args[draw(st.sampled_from(properties))] = draw(JSON_VALUES)
    else:
        args[draw(st.text(min_size=1, max_size=12).filter(lambda key: key not in properties))] = draw(JSON_VALUES)
    return args


def _short_wait(args):
    # run_workflow waits for the run by design (30 s by default) and no worker runs here.
    wait = args.get("wait", 30)
    if isinstance(wait, (int, float)) and not isinstance(wait, bool):
        return {**args, "wait": min(wait, 0.1)}
    return args


def arguments(schema, aims):
    valid = generated(schema, GenerationMode.POSITIVE)
    targeted = aimed(valid, aims) if aims else valid
    keys = st.sampled_from(sorted(schema.get("properties", {})) or [""]) | st.text(max_size=12)
    drawn = st.one_of(valid, targeted, tainted(targeted), generated(schema, GenerationMode.NEGATIVE),
                      broken(valid, schema), st.dictionaries(keys, JSON_VALUES, max_size=6))
    return drawn.map(_short_wait) if "wait" in schema.get("properties", {}) else drawn


def check(name, args, result, conforms, output):
    """The answer to one call: never a crash; an error says what to fix; a success is what the
    tool's outputSchema promises."""
    data = result_json(result)
    text = result.content[0].text
    shown = f"{name}({repr(args)[:300]}) -> {text[:500]}"
    assert not [leak for leak in LEAKS if leak in text], shown
    if result.is_error:
        assert isinstance(data.get("error"), str) and data["error"], shown
        assert conforms or data.get("errors"), f"the refusal names no field: {shown}"
    else:
        assert conforms, f"accepted arguments its inputSchema refuses: {shown}"
        problems = [error.message for error in output.iter_errors(result.structured_content)]
        assert not problems, f"structuredContent breaks the outputSchema ({problems[:3]}): {shown}"


def fuzz(session, tool, aims):
    schema = tool.input_schema
    # What the server checks: the full schema (the published one leaves out size bounds and, for
    # update tools, the nested parts; it also names methods in lower case only, any case works).
    conforms = Draft202012Validator(public_schema(REGISTRY[tool.name].input_schema)).is_valid
    output = Draft202012Validator(tool.output_schema)
    check(tool.name, None, session.call(tool.name, None), conforms({}), output)

    @FUZZ
    @given(arguments(schema, aims))
    def one_call(args):
        check(tool.name, args, session.call(tool.name, args), conforms(args), output)

    one_call()


# -- records ----------------------------------------------------------------------------------------

def _stored(doc, read_only=READ_ONLY_FIELDS):
    return {k: v for k, v in doc.items() if k not in read_only}


def assert_store_valid(store, *, allow_env):
    """Integrations and routes of a store are what their own validation makes of them."""
    for doc in store.list_integrations():
        assert clean_integration(doc, allow_env=allow_env) == _stored(doc), doc
    for doc in store.list_routes():
        assert clean_route(doc, find_integration=store.get_integration, allow_env=allow_env) == _stored(doc), doc


def assert_records_valid(tenant):
    store = DatabaseStore(tenant=tenant, actor=None)
    assert_store_valid(store, allow_env=False)
    collections = {c.pk: c for c in Collection.objects.for_tenant(tenant)}
    for collection in collections.values():
        doc = collection.to_document()
        assert clean_collection(doc) == _stored(doc, ("createdAt", "updatedAt")), doc
    for entity in Entity.objects.for_tenant(tenant):
        assert entity_services.clean_entity_data(collections[entity.collection_id], entity.data) == entity.data
    by_name = {c.name: c for c in collections.values()}
    for app in App.objects.for_tenant(tenant).select_related("tenant"):
        doc = app.to_document()
        assert clean_app(doc, find_collection=by_name.get) == _stored(doc, ("createdAt", "updatedAt", "url")), doc
    servers = set(McpServer.objects.for_tenant(tenant).values_list("name", flat=True))
    for workflow in Workflow.objects.for_tenant(tenant).select_related("tenant"):
        doc = workflow.to_document()
        cleaned = clean_workflow(doc, mcp_server_exists=servers.__contains__, find_integration=store.get_integration)
        assert cleaned == _stored(doc, ("createdAt", "updatedAt", "webhookUrl")), doc


# -- tenant mode ------------------------------------------------------------------------------------

MEMBERS_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "status": {"type": "string"},
                                                    "age": {"type": "integer"}}}
CRM_WORKFLOW = {
    "id": "wf-crm", "name": "CRM",
    "tools": [{"name": "things", "type": "integration", "params": {"integration": "crm", "action": "listThings"}}],
    "workflows": [{"name": "main", "steps": [{"id": "list", "action": "things"},
                                             {"id": "peer", "action": "mcp.listTools", "params": {"server": "peer"}}]}],
}


def seed_tenant(ctx):
    """One record of each kind, with references between them; returns what each tool family can aim at."""
    make_integration(ctx, "crm")
    make_route(ctx, "crm-sync")
    make_mcp_server(ctx, "peer")
    make_app(ctx, "studio")
    make_workflow(ctx, "wf")
    workflow_services.workflow_create(tenant=ctx.tenant, actor=ctx.actor, document=CRM_WORKFLOW)
    loose = make_entity(ctx, "acme-notes")
    entity_services.collection_create(tenant=ctx.tenant, actor=ctx.actor, document={"name": "members", "schema": MEMBERS_SCHEMA})
    member = entity_services.entity_create(tenant=ctx.tenant, actor=ctx.actor, collection_name="members",
                                           data={"name": "Ada", "status": "active", "age": 36})
    entities = [{"collection": "members", "id": str(member.id)},
                {"collection": loose.list_kwargs["collection_name"], "id": loose.detail_kwargs["pk"]}]
    make_secret(ctx, "crm_token")
    run = make_run(ctx, "wf-run")
    RouteInvocation.objects.create(tenant=ctx.tenant, method="get", path="/crm-sync/1", status=200, duration_ms=2.5)
    return {
        "integration": [{"name": "crm"}, {"name": "crm-sync-int"}],
        "route": [{"path": "/crm-sync/{id}", "method": "get"}],
        "app": [{"id": "studio"}],
        "workflow": [{"id": "wf"}, {"id": "wf-crm"}],
        "run": [{"id": run.detail_kwargs["pk"]}, {"workflow": "wf-run"}],
        "entit": entities,
        "collection": entities,
    }


def _aims_for(tool, aims):
    return next((targets for family, targets in aims.items() if family in tool), [])


def test_the_fuzz_covers_every_tool():
    assert set(TENANT_TOOLS) == tools_for(*TOOLS_BY_SCOPE) and LOCAL_TOOLS < set(TENANT_TOOLS)


@pytest.mark.django_db(transaction=True)  # tool calls run (and commit) on the SDK's worker thread
def test_every_tenant_tool_survives_fuzzing(as_tenant, settings, subtests):
    settings.BACKFLOW_MCP_RATE_LIMIT = (10**6, 60)  # the fuzz calls faster than a client may; the limit has its own tests
    # One test, a tenant per tool: each tool meets the seeds as made, and the database is emptied
    # once (on PostgreSQL that flush costs more than a tool's whole fuzz).
    for index, name in enumerate(TENANT_TOOLS):
        with subtests.test(tool=name):
            ctx = as_tenant(f"fuzz{index}")
            aims = _aims_for(name, seed_tenant(ctx))
            with fuzz_session(connection_for(principal_for_token(ctx.key))) as session:
                listed = session.tools()
                assert sorted(listed) == TENANT_TOOLS
                fuzz(session, listed[name], aims)
                assert sorted(session.tools()) == TENANT_TOOLS
            assert_records_valid(ctx.tenant)
            assert AuditEvent.objects.for_tenant(ctx.tenant).filter(action="mcp.tool_call").count() == session.calls


# -- local mode -------------------------------------------------------------------------------------

def local_site(root):
    """A seed-style folder with one integration and one route, and the store and scopes its config gives."""
    site = LocalSite(root)
    config = load_local_config(site.mcp_config, environ={})
    store = FileStore(integrations_path=config.integrations_path, config_path=config.config_path)
    integration_services.integration_create(store=store, document={
        "name": "crm", "baseUrl": "https://crm.example.com", "auth": {"type": "bearer", "secret": "{{env.CRM_TOKEN}}"},
        "endpoints": [{"name": "listThings", "method": "get", "path": "/things"}],
    })
    integration_services.route_create(store=store, document={
        "path": "/things/{id}", "method": "get", "integrations": {"actions": [{"integration": "crm", "action": "listThings"}]},
    })
    return site, config, store


@pytest.mark.django_db  # no rows, but every call checks the worker thread's connection, which earlier tests opened
@pytest.mark.parametrize("name", sorted(LOCAL_TOOLS))
def test_local_tool_survives_fuzzing(name, tmp_path):
    site, config, store = local_site(tmp_path / "studio")
    aims = {"integration": [{"name": "crm"}], "route": [{"path": "/things/{id}", "method": "get"}]}
    with fuzz_session(ToolContext(store=store, allowed=visible_tools(scopes=config.scopes, local=True))) as session:
        listed = session.tools()
        assert set(listed) == LOCAL_TOOLS
        fuzz(session, listed[name], _aims_for(name, aims))
        assert set(session.tools()) == LOCAL_TOOLS

    reread = FileStore(integrations_path=config.integrations_path, config_path=config.config_path)
    assert reread.problems == []
    assert_store_valid(reread, allow_env=True)
    kept = site.read_config()
    assert kept["port"] == 3000 and kept["mcpServers"] == LocalSite.MCP_SERVERS
    site.assert_no_temp_files()


# -- regressions ------------------------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_nul_characters_are_refused_by_name_and_the_refusal_is_audited(acme):
    """PostgreSQL stores no U+0000: a NUL anywhere in a write used to crash the call ("failed
    unexpectedly") and lose its audit event. Now it is a field error, on every database."""
    seed_tenant(acme)
    calls = {
        "create_integration": {"name": "nul", "baseUrl": "https://nul.example.com", "description": "a\x00b"},
        "update_integration": {"name": "crm", "endpoints": [{"name": "x", "method": "get", "path": "/x", "description": "\x00"}]},
        "create_entity": {"collection": "shared-notes", "data": {"note\x00": "x"}},
        "run_workflow": {"id": "wf", "input": {"x": "\x00"}, "wait": 0},
    }
    with fuzz_session(connection_for(principal_for_token(acme.key))) as session:
        for name, args in calls.items():
            result = session.call(name, args)
            data = result_json(result)
            assert result.is_error and any("NUL" in m for ms in data["errors"].values() for m in ms), (name, data)
    audited = dict(AuditEvent.objects.for_tenant(acme.tenant).filter(action="mcp.tool_call").values_list("object_id", "summary"))
    assert set(audited) == set(calls) and all(s["outcome"].startswith("error: Invalid arguments") for s in audited.values())
    assert audited["create_integration"]["target"] == {"name": "nul"} and "description" in audited["create_integration"]["arguments"]


@pytest.mark.django_db(transaction=True)
def test_an_integration_keeps_what_a_workflow_calls(acme):
    """Deleting an integration, or an endpoint of it, that a workflow's integration tool calls left
    the workflow failing its own validation (routes and MCP servers were already protected)."""
    seed_tenant(acme)
    with fuzz_session(connection_for(principal_for_token(acme.key))) as session:
        for name, args in (("delete_integration", {"name": "crm"}), ("update_integration", {"name": "crm", "endpoints": []})):
            result = session.call(name, args)
            data = result_json(result)
            assert result.is_error and "wf-crm" in data["error"], (name, data)
        assert not session.call("delete_workflow", {"id": "wf-crm"}).is_error
        assert not session.call("delete_integration", {"name": "crm"}).is_error
    assert_records_valid(acme.tenant)
