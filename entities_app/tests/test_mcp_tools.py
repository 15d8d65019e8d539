"""The entity and app MCP tools through the MCP SDK's own client.

Remote: Streamable HTTP against a real daphne (`live_daphne`) with API keys. Stdio: the real
`manage.py mcp_stdio` child, in local mode (no entity or app tools) and with `--tenant` (all of
them). Nothing is mocked; every result is checked to carry the same JSON as structuredContent and
as text (helpers.Client).
"""

from contextlib import asynccontextmanager

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from entities_app import services
from entities_app.models import Entity
from mcp_app.tests.helpers import (
    LOCAL_TOOLS,
    Client,
    LocalSite,
    mcp_server,
    run,
)
from tenants.models import AuditEvent
from tests.live import child_database_url

ENTITY_TOOLS = {"list_collections", "list_entities", "get_entity", "create_entity", "update_entity", "delete_entity"}
APP_TOOLS = {"list_apps", "get_app", "create_app", "update_app", "delete_app"}
READ_ONLY = {"list_collections", "list_entities", "get_entity", "list_apps", "get_app"}
DESTRUCTIVE = {"delete_entity", "delete_app", "update_app"}  # update_app replaces the pages list

MEMBERS = {
    "name": "members",
    "description": "Studio members",
    "schema": {
        "type": "object",
        "properties": {
            "name": {"type": "string"}, "status": {"type": "string", "enum": ["active", "paused"]},
            "price": {"type": "number"}, "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["name"],
        "additionalProperties": False,
    },
}
PEOPLE = [
    {"name": "Ana", "status": "active", "price": 10, "tags": ["yoga", "pilates"]},
    {"name": "Ben", "status": "paused", "price": 25.5, "tags": ["spin"]},
    {"name": "Cleo", "status": "active", "price": 40, "tags": ["yoga"]},
    {"name": "Dan", "status": "active"},
    {"name": "Eve", "status": "active", "price": 12, "tags": []},
]
STUDIO = {"id": "studio", "name": "Studio", "description": "Front desk", "pages": [
    {"path": "", "title": "Members", "components": [
        {"type": "table", "binding": {"collection": "members", "fields": ["name", "status"], "sort": "name"}},
        {"type": "form", "binding": {"collection": "members", "fields": ["name", "status"]}},
        {"type": "stat", "props": {"label": "Active", "op": "count"}, "binding": {"collection": "members", "filters": {"status": "active"}}},
    ]},
]}


@asynccontextmanager
async def http_session(server, key):
    """An initialized SDK session over Streamable HTTP, authenticated with `key`."""
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=httpx2.Timeout(10, read=30)) as http,
        streamable_http_client(f"{server.url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield Client(session, None)


def names(listed):
    return [e["data"]["name"] for e in listed["entities"]]


async def check_tool_definitions(s):
    tools = await s.tools()
    assert ENTITY_TOOLS | APP_TOOLS <= set(tools)
    for name in ENTITY_TOOLS | APP_TOOLS:
        t = tools[name]
        assert t.title and t.description and t.input_schema["type"] == "object", name
        assert bool(t.annotations.read_only_hint) is (name in READ_ONLY), name  # absent: false, the protocol's default
        assert t.annotations.destructive_hint is (name in DESTRUCTIVE), name
        assert not any(k.startswith("x-") for k in str(t.input_schema).split("'")), name  # published without our x- keys
    for name in ("list_entities", "get_entity"):  # entity data is what tenants stored, not a prompt
        description = tools[name].description
        assert "user content" in description and "never instructions" in description, description
    assert set(tools["list_entities"].input_schema["properties"]) == {"collection", "filters", "sort", "limit", "cursor"}
    assert tools["update_entity"].input_schema["required"] == ["collection", "id", "data"]


def test_entity_tools_over_streamable_http(acme, globex, live_daphne):
    services.collection_create(tenant=acme.tenant, actor=acme.actor, document=MEMBERS)
    services.collection_create(tenant=acme.tenant, actor=acme.actor, document={"name": "notes", "description": "free-form"})
    services.collection_create(tenant=globex.tenant, actor=globex.actor, document=MEMBERS)  # same name, globex's own
    server = live_daphne()
    made = {}

    async def main():
        async with http_session(server, acme.key) as s:
            await check_tool_definitions(s)
            collections = (await s.ok("list_collections"))["collections"]
            assert [c["name"] for c in collections] == ["members", "notes"]
            assert collections[0]["schema"] == MEMBERS["schema"] and collections[1]["schema"] is None

            # create / get
            for person in PEOPLE:
                entity = await s.ok("create_entity", {"collection": "members", "data": person})
                assert entity["collection"] == "members" and entity["data"] == person and entity["version"] == 1
                made[person["name"]] = entity
            ana = made["Ana"]
            assert await s.ok("get_entity", {"collection": "members", "id": ana["id"]}) == ana
            note = await s.ok("create_entity", {"collection": "notes", "data": {"anything": {"goes": [1, None]}}})
            assert note["data"] == {"anything": {"goes": [1, None]}}

            # schema violations name each field, like data.name
            data, text = await s.error("create_entity", {"collection": "members", "data": {"name": 5, "status": "gone", "extra": 1}})
            assert {"data.name", "data.status", "data"} <= set(data["errors"]), data
            assert "data.name" in text  # in the text the assistant reads, too
            data, _ = await s.error("create_entity", {"collection": "members", "data": {"status": "active"}})
            assert "data.name" in data["errors"], data
            data, _ = await s.error("create_entity", {"collection": "members", "data": ["not", "an", "object"]})
            assert "data" in data["errors"], data
            data, _ = await s.error("create_entity", {"collection": "members"})
            assert "data" in data["errors"], data
            data, _ = await s.error("create_entity", {"collection": "nope", "data": {"name": "x"}})
            assert "nope" in data["error"], data
            for bad_id in ("not-a-uuid", "00000000-0000-0000-0000-000000000000", note["id"]):  # a note is not a member
                data, _ = await s.error("get_entity", {"collection": "members", "id": bad_id})
                assert data["error"].startswith("No entity"), data

            # filters, sort and cursor pages
            listed = await s.ok("list_entities", {"collection": "members", "filters": {"status": "active", "price": {"gte": 10}}, "sort": "-price"})
            assert names(listed) == ["Cleo", "Eve", "Ana"] and listed["nextCursor"] is None
            for filters, expected in [
                ({"status": {"ne": "active"}}, ["Ben"]),
                ({"price": {"lt": 12}}, ["Ana"]),
                ({"price": {"gt": 12, "lte": 40}}, ["Ben", "Cleo"]),
                ({"name": {"in": ["Dan", "Eve", "Zed"]}}, ["Dan", "Eve"]),
                ({"tags": {"contains": "yoga"}}, ["Ana", "Cleo"]),
                ({"name": {"icontains": "LE"}}, ["Cleo"]),
                ({"price": {"exists": False}}, ["Dan"]),
                ({"createdAt": {"gte": ana["createdAt"]}, "status": "paused"}, ["Ben"]),
            ]:
                assert names(await s.ok("list_entities", {"collection": "members", "filters": filters, "sort": "name"})) == expected, filters
            assert names(await s.ok("list_entities", {"collection": "members", "sort": "price"})) == ["Ana", "Eve", "Ben", "Cleo", "Dan"]
            assert names(await s.ok("list_entities", {"collection": "members"})) == ["Eve", "Dan", "Cleo", "Ben", "Ana"]  # newest first
            seen, cursor, pages = [], None, 0
            while True:
                page = await s.ok("list_entities", {"collection": "members", "sort": ["status", "name"], "limit": 2, **({"cursor": cursor} if cursor else {})})
                seen += names(page)
                pages += 1
                if pages == 1:  # an insert between pages is neither repeated nor shifts the rest
                    await s.ok("create_entity", {"collection": "members", "data": {"name": "Aaron", "status": "active"}})
                cursor = page["nextCursor"]
                if cursor is None:
                    break
            assert seen == ["Ana", "Cleo", "Dan", "Eve", "Ben"] and pages == 3
            first = await s.ok("list_entities", {"collection": "members", "limit": 1, "sort": "name"})

            # bad queries name what to fix
            for arguments, field in [
                ({"filters": {"price": {"between": [1, 2]}}}, "filters.price.between"),
                ({"filters": {"colour": "red"}}, "filters.colour"),
                ({"filters": {"price": {"in": 3}}}, "filters.price.in"),
                ({"filters": {"createdAt": {"gte": "last week"}}}, "filters.createdAt"),
                ({"sort": "colour"}, "sort"),
                ({"limit": 0}, "limit"),
                ({"limit": 501}, "limit"),
                ({"cursor": "forged"}, "cursor"),
                ({"cursor": first["nextCursor"]}, "cursor"),  # issued for another sort
                ({"surprise": 1}, "body"),
            ]:
                data, _ = await s.error("list_entities", {"collection": "members", **arguments})
                assert field in data["errors"], (arguments, data)
            data, text = await s.error("list_entities", {"collection": "members", "filters": {"price": {"between": [1, 2]}}})
            assert "unknown operator" in text and "gte" in text, text  # says which operators exist

            # update with versions; a stale version is refused and changes nothing
            updated = await s.ok("update_entity", {"collection": "members", "id": ana["id"], "data": {"price": 11}, "version": 1})
            assert updated["version"] == 2 and updated["data"] == {**PEOPLE[0], "price": 11}
            assert updated["updatedAt"] >= ana["updatedAt"] and updated["createdAt"] == ana["createdAt"]
            data, text = await s.error("update_entity", {"collection": "members", "id": ana["id"], "data": {"price": 99}, "version": 1})
            assert "version" in data["errors"] and "changed since version 1" in data["error"], data
            data, _ = await s.error("update_entity", {"collection": "members", "id": ana["id"], "data": {"status": "gone"}})
            assert "data.status" in data["errors"], data
            data, _ = await s.error("update_entity", {"collection": "members", "id": ana["id"], "data": {"price": 1}, "version": "2"})
            assert "version" in data["errors"], data
            assert (await s.ok("get_entity", {"collection": "members", "id": ana["id"]}))["data"]["price"] == 11
            again = await s.ok("update_entity", {"collection": "members", "id": ana["id"], "data": {"tags": []}})  # no version: last write wins
            assert again["version"] == 3 and again["data"]["tags"] == [] and again["data"]["price"] == 11

            # delete, with and without a version
            data, _ = await s.error("delete_entity", {"collection": "members", "id": ana["id"], "version": 2})
            assert "version" in data["errors"], data
            assert await s.ok("delete_entity", {"collection": "members", "id": ana["id"], "version": 3}) == {"deleted": ana["id"]}
            await s.error("get_entity", {"collection": "members", "id": ana["id"]})
            await s.error("delete_entity", {"collection": "members", "id": ana["id"]})
            assert await s.ok("delete_entity", {"collection": "notes", "id": note["id"]}) == {"deleted": note["id"]}

        # globex: its own "members" is empty, and acme's entities are out of reach by every tool
        async with http_session(server, globex.key) as g:
            assert [c["name"] for c in (await g.ok("list_collections"))["collections"]] == ["members"]
            assert (await g.ok("list_entities", {"collection": "members"}))["entities"] == []
            await g.error("list_entities", {"collection": "notes"})
            ben = made["Ben"]["id"]
            for tool, arguments in [
                ("get_entity", {"collection": "members", "id": ben}),
                ("update_entity", {"collection": "members", "id": ben, "data": {"name": "taken over"}}),
                ("delete_entity", {"collection": "members", "id": ben}),
            ]:
                data, _ = await g.error(tool, arguments)
                assert data["error"].startswith("No entity"), (tool, data)
            data, _ = await g.error("create_entity", {"collection": "notes", "data": {"x": 1}})
            assert "notes" in data["error"]

    run(main, timeout=60)

    ben = Entity.objects.for_tenant(acme.tenant).get(pk=made["Ben"]["id"])
    assert ben.data == PEOPLE[1] and ben.version == 1
    assert not Entity.objects.for_tenant(globex.tenant).exists()
    # Every write is audited as the key that made it.
    prefix = acme.key.split("_", 2)[1]
    writes = AuditEvent.objects.for_tenant(acme.tenant).filter(principal=f"key:{prefix}", action__startswith="entity.")
    assert {"entity.create", "entity.update", "entity.delete"} <= set(writes.values_list("action", flat=True))
    calls = AuditEvent.objects.for_tenant(globex.tenant).filter(action="mcp.tool_call", object_id="update_entity")
    assert calls.count() == 1 and calls.get().summary["outcome"].startswith("error")


def test_app_tools_and_scopes_over_streamable_http(acme, globex, live_daphne):
    services.collection_create(tenant=acme.tenant, actor=acme.actor, document=MEMBERS)
    ana = services.entity_create(tenant=acme.tenant, actor=acme.actor, collection_name="members", data={"name": "Ana"})
    keys = scoped_keys(acme)
    server = live_daphne()

    async def main():
        async with http_session(server, acme.key) as s:
            assert await s.ok("list_apps") == {"apps": []}
            created = await s.ok("create_app", STUDIO)
            assert created["id"] == "studio" and created["url"] == "/apps/acme/studio/" and created["public"] is False
            assert created["pages"][0]["components"][0]["binding"] == STUDIO["pages"][0]["components"][0]["binding"]
            assert await s.ok("get_app", {"id": "studio"}) == created
            assert await s.ok("list_apps") == {"apps": [{"id": "studio", "name": "Studio", "description": "Front desk", "public": False,
                                                          "pages": [""], "url": "/apps/acme/studio/"}]}
            # The id defaults to one made from the name.
            board = await s.ok("create_app", {"name": "Front Board", "pages": [{"path": "", "components": [{"type": "markdown", "props": {"text": "# Hi"}}]}]})
            assert board["id"] == "front-board" and board["pages"][0]["title"] == "Front Board"

            updated = await s.ok("update_app", {"id": "studio", "description": "Members and classes", "public": True})
            assert updated["description"] == "Members and classes" and updated["public"] is True
            assert updated["pages"] == created["pages"] and updated["name"] == "Studio"
            more_pages = STUDIO["pages"] + [{"path": "people", "title": "People", "components": [
                {"type": "list", "binding": {"collection": "members", "fields": ["name"], "sort": "-createdAt"}}]}]
            updated = await s.ok("update_app", {"id": "studio", "pages": more_pages})
            assert [p["path"] for p in updated["pages"]] == ["", "people"] and updated["public"] is True

            # bad input names the field
            for arguments, field in [
                ({**STUDIO, "id": "broken", "pages": [{"path": "", "components": [{"type": "table", "binding": {"collection": "nope"}}]}]},
                 "pages[0].components[0].binding.collection"),
                ({**STUDIO, "id": "broken", "pages": [{"path": "", "components": [{"type": "table", "binding": {"collection": "members", "fields": ["colour"]}}]}]},
                 "pages[0].components[0].binding.fields[0]"),
                ({**STUDIO, "id": "broken", "pages": [{"path": "", "components": [
                    {"type": "list", "binding": {"collection": "members", "filters": {"price": {"zz": 1}}}}]}]},
                 "pages[0].components[0].binding.filters.price.zz"),
                ({**STUDIO, "id": "broken", "pages": [{"path": "", "components": [{"type": "chart"}]}]}, "pages[0].components[0].type"),
                ({**STUDIO, "id": "Not An Id"}, "id"),
                ({"id": "broken", "pages": STUDIO["pages"]}, "name"),
                ({**STUDIO, "id": "broken", "pages": []}, "pages"),
            ]:
                data, _ = await s.error("create_app", arguments)
                assert field in data["errors"], (field, data)
            data, text = await s.error("create_app", {**STUDIO, "id": "broken", "pages": [{"path": "", "components": [
                {"type": "table", "binding": {"collection": "nope"}}]}]})
            assert "create it first" in text, text
            data, _ = await s.error("create_app", STUDIO)
            assert "already exists" in data["error"] and "id" in data["errors"], data
            data, _ = await s.error("update_app", {"id": "studio", "pages": [{"path": "", "components": [{"type": "form", "binding": {"collection": "gone"}}]}]})
            assert "pages[0].components[0].binding.collection" in data["errors"], data
            data, _ = await s.error("update_app", {"id": "nope", "description": "x"})
            assert "nope" in data["error"], data
            data, _ = await s.error("update_app", {"description": "no id"})
            assert "id" in data["errors"], data
            assert (await s.ok("get_app", {"id": "studio"}))["pages"] == updated["pages"]  # the failed updates changed nothing

        # globex sees no app of acme's and cannot touch them
        async with http_session(server, globex.key) as g:
            assert await g.ok("list_apps") == {"apps": []}
            for tool, arguments in [("get_app", {"id": "studio"}), ("update_app", {"id": "studio", "public": False}),
                                    ("delete_app", {"id": "studio"})]:
                data, _ = await g.error(tool, arguments)
                assert data["error"] == "No app with id 'studio'.", (tool, data)
            data, _ = await g.error("create_app", STUDIO)  # acme's collection is not globex's
            assert "pages[0].components[0].binding.collection" in data["errors"], data

        await check_scopes(server, keys, str(ana.id))

        async with http_session(server, acme.key) as s:
            assert (await s.ok("get_app", {"id": "studio"}))["public"] is True
            assert await s.ok("delete_app", {"id": "studio"}) == {"deleted": "studio"}
            data, _ = await s.error("get_app", {"id": "studio"})
            assert data["error"] == "No app with id 'studio'."
            await s.error("delete_app", {"id": "studio"})
            assert [a["id"] for a in (await s.ok("list_apps"))["apps"]] == ["front-board"]

    run(main, timeout=60)
    assert list(Entity.objects.for_tenant(acme.tenant).values_list("data", flat=True)) == [{"name": "Ana"}]


def scoped_keys(acme):
    return {scope: acme.key_with(scope, name=scope.replace(":", "-")) for scope in
            ("entities:read", "entities:write", "apps:read", "apps:write")}


async def check_scopes(server, keys, entity_id):
    """A key's scopes decide which entity and app tools it lists and may call."""
    async with http_session(server, keys["entities:read"]) as s:
        assert set(await s.tools()) == {"list_collections", "list_entities", "get_entity"}
        assert names(await s.ok("list_entities", {"collection": "members"})) == ["Ana"]
        assert (await s.ok("get_entity", {"collection": "members", "id": entity_id}))["data"] == {"name": "Ana"}
        for tool, arguments in [("create_entity", {"collection": "members", "data": {"name": "Sneaky"}}),
                                ("update_entity", {"collection": "members", "id": entity_id, "data": {"name": "x"}}),
                                ("delete_entity", {"collection": "members", "id": entity_id}),
                                ("list_apps", {}), ("list_integrations", {})]:
            data, _ = await s.error(tool, arguments)
            assert data["error"].startswith(f"Unknown tool {tool!r}"), data
    async with http_session(server, keys["entities:write"]) as s:
        assert set(await s.tools()) == {"create_entity", "update_entity", "delete_entity"}
    async with http_session(server, keys["apps:read"]) as s:
        assert set(await s.tools()) == {"list_apps", "get_app"}
        assert (await s.ok("get_app", {"id": "studio"}))["name"] == "Studio"
        for tool in ("create_app", "delete_app", "list_entities", "list_collections"):
            data, _ = await s.error(tool, {"id": "studio"})
            assert data["error"].startswith(f"Unknown tool {tool!r}"), data
    async with http_session(server, keys["apps:write"]) as s:
        assert set(await s.tools()) == {"create_app", "update_app", "delete_app"}


def test_stdio_local_mode_has_no_entity_tools_and_tenant_mode_has_them(acme, transactional_db, tmp_path):
    site = LocalSite(tmp_path / "studio")  # mcp-config.json, integrations/, config.json
    services.collection_create(tenant=acme.tenant, actor=acme.actor, document=MEMBERS)

    async def main():
        async with mcp_server(site.mcp_config) as local:
            tools = set(await local.tools())
            assert tools == LOCAL_TOOLS and not tools & (ENTITY_TOOLS | APP_TOOLS)
            data, _ = await local.error("list_collections", {})
            assert data["error"].startswith("Unknown tool 'list_collections'"), data
            await local.error("create_app", STUDIO)
        async with mcp_server("--tenant", "acme", env={"DATABASE_URL": child_database_url()}) as tenant:
            await check_tool_definitions(tenant)
            assert [c["name"] for c in (await tenant.ok("list_collections", {}))["collections"]] == ["members"]
            created = await tenant.ok("create_entity", {"collection": "members", "data": {"name": "Stdio"}})
            assert names(await tenant.ok("list_entities", {"collection": "members"})) == ["Stdio"]
            await tenant.ok("create_app", STUDIO)
            return created

    created = run(main, timeout=60)
    assert Entity.objects.for_tenant(acme.tenant).get(pk=created["id"]).data == {"name": "Stdio"}
    assert AuditEvent.objects.for_tenant(acme.tenant).filter(action="app.create", principal="system:mcp_stdio").exists()
