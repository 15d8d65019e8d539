"""Hostile entity filters (issue 14), sent as an attacker would: through REST, the MCP tool
`list_entities` and an app page's binding.

A filter's field name reached Django's lookup parser as `data__<field>`: `{"name__regex":
"(a+)+$"}` was a regex lookup (Python `re` on SQLite, holding the GIL: exponential in the value's
length, the whole process frozen), and a field named like a lookup (`{"regex": …}`,
`{"isnull": …}`) applied that lookup to the whole document. Now field names are checked (no `__`,
no JSON-path characters), each field is one explicit JSON key, and filters are bounded in
conditions, nesting and size. Every documented operator still works, on SQLite and PostgreSQL
(run this file with DATABASE_URL set for the second).
"""

import json
import time
from contextlib import contextmanager

import pytest
from anyio.from_thread import start_blocking_portal
from asgiref.sync import sync_to_async
from django.db import connections
from mcp import Client

from entities_app import services
from entities_app.documents import FILTER_MAX_CONDITIONS, FILTER_MAX_DEPTH, FILTER_MAX_VALUE_CHARS
from entities_app.models import App
from mcp_app.http import connection_for
from mcp_app.server import CONNECTION, build_server
from mcp_app.tests.helpers import result_json
from tenants.authentication import principal_for_token

EVIL = "(a+)+$"
# Python's re needs ~2^n steps to fail `(a+)+$` on n a's and a "!": n=24 is seconds, n=30 minutes.
VICTIM = "a" * 26 + "!"
QUICK = 2.0  # seconds: a refused filter is answered at once (the unfixed regex took far longer)


@pytest.fixture
def notes(acme):
    """A collection without a schema: any field name is a candidate."""
    services.collection_create(tenant=acme.tenant, actor=acme.actor, document={"name": "notes"})
    for data in (
        {"name": VICTIM, "n": 1},
        {"name": "Ana", "n": 2, "tags": ["yoga", "spin"], "regex": "x", "contains": "y", "in": 3, "isnull": True,
         "with-dash": "d", "_under": "u", "nested": {"a": [1, 2]}},
        {"name": "Ben", "n": 3.5, "tags": [], "regex": "z", "isnull": False},
    ):
        services.entity_create(tenant=acme.tenant, actor=acme.actor, collection_name="notes", data=data)
    return acme


def rest(ctx, filters, **params):
    started = time.monotonic()
    response = ctx.client().get("/api/collections/notes/entities/", {"filters": json.dumps(filters), **params})
    return response, time.monotonic() - started


def names(ctx, filters):
    response, _ = rest(ctx, filters)
    assert response.status_code == 200, response.content[:500]
    return sorted(e["data"]["name"] for e in response.json()["results"])


def refused(ctx, filters, field):
    response, took = rest(ctx, filters)
    assert response.status_code == 400, (response.status_code, response.content[:500])
    errors = response.json()["errors"]
    assert field in errors, errors
    assert took < QUICK, took
    return errors[field]


# -- the attack, through each door ------------------------------------------------------------------

@pytest.mark.parametrize("filters", [
    {"name__regex": EVIL},
    {"name__regex": {"eq": EVIL}},
    {"name__iregex": {"ne": EVIL}},
    {"name__regex": {"in": [EVIL]}},
])
def test_regex_through_a_field_name_is_refused_quickly_over_rest(notes, filters):
    messages = refused(notes, filters, "filters.name__" + next(iter(filters))[6:])
    assert "__" in messages[0]


@pytest.mark.parametrize("field", [
    'name") OR 1=1 --', "$.name", "name.first", "name[0]", "name\n", "name ", "", "__proto__", "data__contains",
    "a" * 64, "1st", "na\"me", "name$", "ünï",
])
def test_field_names_that_could_be_paths_or_lookups_are_refused(notes, field):
    refused(notes, {field: "x"}, f"filters.{field}")


def test_a_field_named_like_a_lookup_is_just_a_field(notes):
    """`data__regex` was a regex over the whole document, `data__isnull` the column's IS NULL."""
    started = time.monotonic()
    assert names(notes, {"regex": EVIL}) == []
    assert time.monotonic() - started < QUICK
    assert names(notes, {"regex": "x"}) == ["Ana"]
    assert names(notes, {"contains": "y"}) == ["Ana"]
    assert names(notes, {"in": 3}) == ["Ana"]
    assert names(notes, {"isnull": True}) == ["Ana"]
    assert names(notes, {"isnull": {"ne": True}}) == ["Ben", VICTIM]
    assert names(notes, {"regex": {"in": ["x", "z"]}}) == ["Ana", "Ben"]
    assert names(notes, {"regex": {"icontains": "X"}}) == ["Ana"]
    assert names(notes, {"regex": {"gt": "y"}}) == ["Ben"]


def _in_memory_session(ctx):
    """The MCP SDK's client on the server every transport builds, over its in-memory transport."""

    async def as_connection(connection, method, *args):
        CONNECTION.set(connection)
        return await method(*args)

    @contextmanager
    def session():
        connection = connection_for(principal_for_token(ctx.key))
        with start_blocking_portal() as portal:
            client = Client(build_server(), mode="legacy", read_timeout_seconds=20)
            try:
                with portal.wrap_async_context_manager(client) as connected:
                    yield lambda name, args: portal.call(as_connection, connection, connected.call_tool, name, args)
            finally:
                portal.call(sync_to_async(connections.close_all, thread_sensitive=True))

    return session()


@pytest.mark.django_db(transaction=True)
def test_regex_through_the_mcp_tool_is_refused_quickly(notes):
    with _in_memory_session(notes) as call:
        for filters in ({"name__regex": EVIL}, {"name__regex": {"in": [EVIL]}}, {"$.name": "x"}):
            started = time.monotonic()
            result = call("list_entities", {"collection": "notes", "filters": filters})
            took = time.monotonic() - started
            data = result_json(result)
            assert result.is_error, data
            assert f"filters.{next(iter(filters))}" in data["errors"], data
            assert took < QUICK, took
        # A field named like a lookup is a field there too; bounds apply.
        result = call("list_entities", {"collection": "notes", "filters": {"regex": EVIL}})
        assert not result.is_error and result_json(result)["entities"] == []
        result = call("list_entities", {"collection": "notes", "filters": {"name": {"in": list(range(3000))}}})
        assert result.is_error and "filters.name.in" in result_json(result)["errors"]
        result = call("list_entities", {"collection": "notes", "filters": {"regex": "x", "n": {"gte": 2}}})
        assert [e["data"]["name"] for e in result_json(result)["entities"]] == ["Ana"]


def app_with(filters):
    return {"id": "board", "name": "Board", "pages": [{"path": "", "components": [
        {"type": "table", "binding": {"collection": "notes", "fields": ["name"], "filters": filters}},
    ]}]}


def test_regex_through_an_app_binding_is_refused_at_create_and_update(notes):
    client = notes.client()
    where = "pages[0].components[0].binding.filters.name__regex"
    response = client.post("/api/apps/", app_with({"name__regex": EVIL}), format="json")
    assert response.status_code == 400 and where in response.json()["errors"], response.content[:500]
    assert not App.objects.for_tenant(notes.tenant).exists()

    assert client.post("/api/apps/", app_with({"regex": "x"}), format="json").status_code == 201
    for method in ("patch", "put"):
        response = getattr(client, method)("/api/apps/board/", app_with({"name__regex": EVIL}), format="json")
        assert response.status_code == 400 and where in response.json()["errors"], response.content[:500]
    assert App.objects.for_tenant(notes.tenant).get().pages[0]["components"][0]["binding"]["filters"] == {"regex": "x"}
    # The page built from the stored, valid binding still shows what it filters.
    notes.client()  # (members sign in to see pages; the owner does)
    from django.test import Client as PageClient

    page = PageClient()
    page.force_login(notes.owner)
    shown = page.get("/apps/acme/board/")
    assert shown.status_code == 200 and b"Ana" in shown.content and b"Ben" not in shown.content


# -- bounds -----------------------------------------------------------------------------------------

def test_filters_are_bounded(notes):
    too_many = {f"f{i}": {"ne": 1, "exists": True} for i in range(FILTER_MAX_CONDITIONS // 2 + 1)}
    assert "at most 20 in one filter" in refused(notes, too_many, "filters")[0]
    assert "at most 20" in refused(notes, {f"f{i}": 1 for i in range(21)}, "filters")[0]

    deep = "x"
    for _ in range(FILTER_MAX_DEPTH + 1):
        deep = [deep]
    assert "more than 4 levels" in refused(notes, {"nested": deep}, "filters.nested")[0]
    assert "more than 4 levels" in refused(notes, {"nested": {"eq": deep}}, "filters.nested.eq")[0]
    assert "more than 4 levels" in refused(notes, {"nested": {"in": [deep[0]]}}, "filters.nested.in")[0]

    assert "at most 4000" in refused(notes, {"name": "a" * FILTER_MAX_VALUE_CHARS}, "filters.name")[0]
    assert "at most 4000" in refused(notes, {"name": {"icontains": "a" * 5000}}, "filters.name.icontains")[0]
    assert "at most 4000" in refused(notes, {"n": {"in": list(range(2000))}}, "filters.n.in")[0]
    assert "unknown operator" in refused(notes, {"name": {"regex": EVIL}}, "filters.name.regex")[0]
    assert "unknown operator" in refused(notes, {"name": {"eq": "Ana", "iregex": EVIL}}, "filters.name.iregex")[0]

    # Just inside every bound is accepted.
    inside = [1]
    for _ in range(FILTER_MAX_DEPTH - 1):
        inside = [inside]
    assert names(notes, {"nested": inside, "name": "a" * 100, **{f"f{i}": {"ne": 1} for i in range(18)}}) == []


def test_a_deep_filters_parameter_is_400_not_a_crash(notes):
    response = notes.client().get("/api/collections/notes/entities/", {"filters": "[" * 100_000})
    assert response.status_code == 400 and "filters" in response.json()["errors"], response.content[:300]


def test_limits_follow_the_settings(notes, settings):
    settings.BACKFLOW_FILTER_MAX_CONDITIONS = 1
    assert "at most 1 in one filter" in refused(notes, {"name": "Ana", "n": 2}, "filters")[0]
    settings.BACKFLOW_FILTER_MAX_VALUE_CHARS = 10
    assert "at most 10" in refused(notes, {"name": "a" * 20}, "filters.name")[0]


# -- every documented operator still works ----------------------------------------------------------

@pytest.mark.parametrize("filters, expected", [
    ({"name": "Ana"}, ["Ana"]),
    ({"name": {"eq": "Ben"}}, ["Ben"]),
    ({"name": {"ne": "Ana"}}, ["Ben", VICTIM]),
    ({"tags": {"ne": []}}, ["Ana", VICTIM]),
    ({"n": {"gt": 1}}, ["Ana", "Ben"]),
    ({"n": {"gte": 2, "lt": 3.5}}, ["Ana"]),
    ({"n": {"lte": 2}}, ["Ana", VICTIM]),
    ({"name": {"gt": "B"}}, ["Ben", VICTIM]),
    ({"name": {"in": ["Ana", "Zed", 3]}}, ["Ana"]),
    ({"n": {"in": [1, 3.5]}}, ["Ben", VICTIM]),
    ({"tags": {"contains": "spin"}}, ["Ana"]),
    ({"name": {"contains": "aaa!"}}, [VICTIM]),
    ({"name": {"icontains": "BE"}}, ["Ben"]),
    ({"name": {"icontains": "%"}}, []),  # LIKE wildcards are literal
    ({"tags": {"exists": True}}, ["Ana", "Ben"]),
    ({"tags": {"exists": False}}, [VICTIM]),
    ({"nested": {"eq": {"a": [1, 2]}}}, ["Ana"]),
    ({"nested": {"eq": {"a": [1]}}}, []),
    ({"with-dash": "d", "_under": "u"}, ["Ana"]),
    ({"createdAt": {"gte": "2000-01-01T00:00:00Z"}, "updatedAt": {"lt": "2999-01-01T00:00:00Z"}}, ["Ana", "Ben", VICTIM]),
    ({"createdAt": {"exists": True}, "n": {"ne": 1}}, ["Ana", "Ben"]),
])
def test_documented_operators_still_work(notes, filters, expected):
    assert names(notes, filters) == expected


def test_sort_and_cursors_with_odd_but_valid_names(notes):
    response, _ = rest(notes, {"name": {"exists": True}}, sort="with-dash,-n", limit=1)
    first = response.json()
    assert response.status_code == 200 and first["nextCursor"], first
    response, _ = rest(notes, {"name": {"exists": True}}, sort="with-dash,-n", limit=5, cursor=first["nextCursor"])
    assert response.status_code == 200
    seen = [first["results"][0]["data"]["name"]] + [e["data"]["name"] for e in response.json()["results"]]
    assert seen == ["Ana", "Ben", VICTIM]


def test_a_stored_binding_that_no_longer_passes_shows_a_problem_not_a_500(notes):
    """An app saved before the filter rules (or whose collection was deleted since) renders its page
    with the component's problem named, and runs no refused filter."""
    app = {**app_with({"name": "Ana"}), "public": True}
    app["pages"][0]["components"].append({"type": "stat", "binding": {"collection": "notes", "filters": {"name": "Ana"}}})
    assert notes.client().post("/api/apps/", app, format="json").status_code == 201
    stored = App.objects.for_tenant(notes.tenant).get()
    for component in stored.pages[0]["components"]:
        component["binding"]["filters"] = {"name__regex": EVIL}
    stored.save()
    started = time.monotonic()
    response = notes.client().get("/apps/acme/board/")
    assert response.status_code == 200 and time.monotonic() - started < 2, response.status_code
    assert response.content.decode().count("This component cannot be shown") == 2
