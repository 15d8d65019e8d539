"""Local mode end to end: the seed's fitness-studio walk-through over a real `mcp_stdio` process.

An assistant creates the Mindbody, Stripe and Twilio integrations and the four routes, reads them
back, changes and deletes them, and after every step the files on disk are what the seed promises:
integrations/<name>.json, config.json `routes`, every other key of config.json left alone, valid
pretty JSON throughout.
"""

import copy

from mcp_app.tests import fitness
from mcp_app.tests.helpers import LOCAL_TOOLS, assert_pretty_json, mcp_server, run


def other_keys(config):
    return {k: v for k, v in config.items() if k != "routes"}


def test_tools_have_schema_title_and_annotations(site, tmp_path):
    async def main():
        async with mcp_server(site.mcp_config, cwd=tmp_path) as client:
            return await client.tools()

    tools = run(main)
    assert set(tools) == LOCAL_TOOLS  # local mode offers only integration and route tools
    for name, tool in tools.items():
        assert tool.title, name
        assert tool.description, name
        schema = tool.input_schema
        assert schema["type"] == "object" and isinstance(schema.get("properties"), dict), name
        assert "x-pattern-help" not in repr(schema), f"{name} publishes internal schema keywords"
        hints = tool.annotations
        assert hints is not None, name
        is_read = name.startswith(("list_", "get_"))
        assert bool(hints.read_only_hint) is is_read, name  # absent means false (the protocol's default)
        if name.startswith("delete_"):
            assert hints.destructive_hint is True, name
        if is_read:
            assert hints.destructive_hint is not True, name
    assert tools["get_integration"].input_schema["required"] == ["name"]
    assert set(tools["get_route"].input_schema["required"]) == {"path", "method"}
    assert set(tools["delete_route"].input_schema["required"]) == {"path", "method"}
    assert {"name", "baseUrl"} <= set(tools["create_integration"].input_schema["required"])
    assert {"path", "method", "integrations"} <= set(tools["create_route"].input_schema["required"])


def test_fitness_studio_walkthrough(site, tmp_path):
    original = site.read_config()
    original_bytes = site.config.read_bytes()  # hand-written, compact
    elsewhere = tmp_path / "elsewhere"  # the server's cwd must not matter when a config is given
    elsewhere.mkdir()

    def check_config_routes(expected_routes):
        config = assert_pretty_json(site.config)
        assert other_keys(config) == other_keys(original)
        assert list(config)[:2] == ["port", "mcpServers"]  # untouched keys keep their place
        assert sorted(config["routes"], key=lambda r: (r["path"], r["method"])) == sorted(
            expected_routes, key=lambda r: (r["path"], r["method"]))
        site.assert_no_temp_files()
        return config

    async def main():
        async with mcp_server(site.mcp_config, cwd=elsewhere) as client:
            # -- integrations ------------------------------------------------------------
            assert await client.ok("list_integrations") == {"integrations": []}
            for doc in fitness.INTEGRATIONS:
                created = await client.ok("create_integration", copy.deepcopy(doc))
                assert created == fitness.stored_integration(doc)
                assert assert_pretty_json(site.integration_file(doc["name"])) == created
                assert site.config.read_bytes() == original_bytes  # integrations never touch config.json
            assert site.integration_names() == ["mindbody", "stripe", "twilio"]

            listed = await client.ok("list_integrations")
            assert [i["name"] for i in listed["integrations"]] == ["mindbody", "stripe", "twilio"]
            assert "problems" not in listed
            twilio = next(i for i in listed["integrations"] if i["name"] == "twilio")
            assert twilio == {"name": "twilio", "displayName": "Twilio", "description": "SMS class reminders",
                              "baseUrl": "https://api.twilio.com/2010-04-01", "authType": "basic", "endpoints": ["sendSms"]}
            for doc in fitness.INTEGRATIONS:
                got = await client.ok("get_integration", {"name": doc["name"]})
                assert got == fitness.stored_integration(doc) == assert_pretty_json(site.integration_file(doc["name"]))
            # secrets stay references: the files never hold a credential value
            assert "{{env.TWILIO_AUTH_TOKEN}}" in site.integration_file("twilio").read_text()

            # -- routes --------------------------------------------------------------------
            stored = []
            for doc in fitness.ROUTES:
                created = await client.ok("create_route", copy.deepcopy(doc))
                route_id = created.pop("id")
                assert route_id and isinstance(route_id, str)
                assert created == fitness.stored_route(doc)
                stored.append({"id": route_id, **created})
                check_config_routes(stored)

            listed = await client.ok("list_routes")
            assert sorted((r["method"], r["path"]) for r in listed["routes"]) == [
                ("get", "/classes"), ("get", "/dashboard"), ("post", "/bookings"), ("post", "/memberships")]
            assert sorted(listed["routes"], key=lambda r: r["id"]) == sorted(stored, key=lambda r: r["id"])

            dashboard = await client.ok("get_route", {"path": "/dashboard", "method": "GET"})
            assert dashboard == next(r for r in stored if r["path"] == "/dashboard")
            assert dashboard["response"] == {"studio": "{{steps.stats.result}}", "activeSubscriptions": "{{steps.subs.result.data}}"}
            assert dashboard["integrations"]["actions"][1]["params"] == {"limit": "{{steps.stats.result.activeMembers}}"}
            assert await client.ok("get_route", {"path": "/dashboard", "method": "get"}) == dashboard

            # -- update --------------------------------------------------------------------
            twilio_doc = fitness.stored_integration(fitness.TWILIO)
            new_endpoints = twilio_doc["endpoints"] + [
                {"name": "listMessages", "method": "get", "path": "/Accounts/{accountSid}/Messages.json"}]
            updated = await client.ok("update_integration", {
                "name": "twilio", "description": "SMS reminders and receipts", "endpoints": new_endpoints})
            assert updated == {**twilio_doc, "description": "SMS reminders and receipts", "endpoints": new_endpoints}
            assert assert_pretty_json(site.integration_file("twilio")) == updated
            assert await client.ok("get_integration", {"name": "twilio"}) == updated

            updated = await client.ok("update_integration", {"name": "stripe", "auth": {"type": "bearer", "secret": "{{env.STRIPE_RESTRICTED_KEY}}"}})
            assert updated == {**fitness.stored_integration(fitness.STRIPE), "auth": {"type": "bearer", "secret": "{{env.STRIPE_RESTRICTED_KEY}}"}}
            assert assert_pretty_json(site.integration_file("stripe")) == updated

            classes = next(r for r in stored if r["path"] == "/classes")
            changed = await client.ok("update_route", {"path": "/classes", "method": "GET",
                                                       "description": "Classes this week", "requireAuth": True})
            assert changed == {**classes, "description": "Classes this week", "requireAuth": True}
            stored[stored.index(classes)] = changed
            check_config_routes(stored)

            memberships = next(r for r in stored if r["path"] == "/memberships")
            moved = await client.ok("update_route", {"path": "/memberships", "method": "post", "newPath": "/members/{customerId}",
                                                     "newMethod": "PUT"})
            assert moved == {**memberships, "path": "/members/{customerId}", "method": "put"}  # same id, new place
            stored[stored.index(memberships)] = moved
            check_config_routes(stored)
            _, text = await client.error("get_route", {"path": "/memberships", "method": "post"})
            assert "/memberships" in text
            assert await client.ok("get_route", {"path": "/members/{customerId}", "method": "put"}) == moved

            # -- delete --------------------------------------------------------------------
            bookings = next(r for r in stored if r["path"] == "/bookings")
            assert await client.ok("delete_route", {"path": "/bookings", "method": "POST"}) == {
                "deleted": {"path": "/bookings", "method": "post"}}
            stored.remove(bookings)
            check_config_routes(stored)
            await client.error("get_route", {"path": "/bookings", "method": "post"})

            # nothing calls Twilio any more, so it can go
            assert await client.ok("delete_integration", {"name": "twilio"}) == {"deleted": "twilio"}
            assert not site.integration_file("twilio").exists()
            assert site.integration_names() == ["mindbody", "stripe"]
            data, _ = await client.error("get_integration", {"name": "twilio"})
            assert "twilio" in data["error"]
            assert [i["name"] for i in (await client.ok("list_integrations"))["integrations"]] == ["mindbody", "stripe"]

            final = await client.ok("list_routes")
            config = check_config_routes(stored)
            assert sorted(final["routes"], key=lambda r: r["id"]) == sorted(config["routes"], key=lambda r: r["id"])
            return client.stderr()

    stderr = run(main)
    assert " DEBUG " not in stderr  # debug logs only with DEBUG=mcp*
    for doc in (fitness.MINDBODY, fitness.STRIPE):
        assert_pretty_json(site.integration_file(doc["name"]))
    assert not list(elsewhere.iterdir())  # nothing written next to the process
