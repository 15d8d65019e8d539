"""Bad input for every local-mode tool: an `isError` result that names what to fix.

One server takes every bad call in turn. After each one the server still answers, and the files
are byte for byte what they were: a refused write never leaves half a file or a temp file behind.
"""

from mcp_app.tests.helpers import LOCAL_TOOLS, mcp_server, run

MINDBODY = {
    "name": "mindbody", "baseUrl": "https://api.mindbodyonline.com/public/v6",
    "auth": {"type": "bearer", "secret": "{{env.MINDBODY_TOKEN}}"},
    "endpoints": [
        {"name": "listClasses", "method": "get", "path": "/class/classes"},
        {"name": "bookClass", "method": "post", "path": "/class/addclienttoclass"},
    ],
}
CLASSES = {"path": "/classes", "method": "get", "integrations": {"actions": [{"integration": "mindbody", "action": "listClasses"}]}}
BOOKINGS = {"path": "/bookings", "method": "post", "integrations": {"actions": [{"integration": "mindbody", "action": "bookClass"}]}}
URL = "https://api.example.com"


def actions(*items):
    return {"actions": list(items)}


# (tool, arguments, field keys the answer's `errors` must hold (or None), text the message must contain)
CASES = [
    # create_integration
    ("create_integration", {}, ["name", "baseUrl"], "required"),
    ("create_integration", {"name": 42, "baseUrl": URL}, ["name"], "42"),
    ("create_integration", {"name": "Mind Body", "baseUrl": URL}, ["name"], "lower-case"),
    ("create_integration", {"name": "mindbody", "baseUrl": URL}, ["name"], "already exists"),
    ("create_integration", {"name": "crm", "baseUrl": "ftp://files.example.com"}, ["baseUrl"], "http"),
    ("create_integration", {"name": "crm", "baseUrl": URL, "auth": {"type": "bearer"}}, ["auth.secret"], "secret"),
    ("create_integration", {"name": "crm", "baseUrl": URL, "auth": {"type": "bearer", "secret": "sk_live_ABC 123"}}, ["auth.secret"], "secret"),
    # A raw credential would be written into integrations/crm.json, a file users commit: refused at once.
    ("create_integration", {"name": "crm", "baseUrl": URL, "auth": {"type": "bearer", "secret": "sk_live_abc123"}}, ["auth.secret"], "{{env.NAME}}"),
    ("create_integration", {"name": "crm", "baseUrl": URL, "auth": {"type": "basic", "username": "u", "secret": "hunter2"}}, ["auth.secret"], "{{env.NAME}}"),
    ("create_integration", {"name": "crm", "baseUrl": URL, "auth": {"type": "magic"}}, ["auth.type"], "magic"),
    ("create_integration", {"name": "crm", "baseUrl": URL, "auth": "bearer"}, ["auth"], "object"),
    ("create_integration", {"name": "crm", "baseUrl": URL, "endpoints": "listRecords"}, ["endpoints"], "array"),
    ("create_integration", {"name": "crm", "baseUrl": URL, "endpoints": [{"name": "list", "method": "get"}]}, ["endpoints[0].path"], "required"),
    ("create_integration", {"name": "crm", "baseUrl": URL, "endpoints": [
        {"name": "list", "method": "get", "path": "/a"}, {"name": "list", "method": "post", "path": "/b"}]}, ["endpoints[1].name"], "duplicate"),
    ("create_integration", {"name": "crm", "baseUrl": URL, "endpoints": [
        {"name": "list", "method": "get", "path": "/a", "query": {"q": "{{request.query.q}}"}}]}, ["endpoints[0].query"], "request"),
    ("create_integration", {"name": "crm", "baseUrl": URL, "colour": "red"}, None, "colour"),
    # list_integrations
    ("list_integrations", {"verbose": True}, None, "verbose"),
    # get_integration
    ("get_integration", {}, ["name"], "required"),
    ("get_integration", {"name": ["mindbody"]}, ["name"], "string"),
    ("get_integration", {"name": "ghost"}, None, "No integration named 'ghost'"),
    # update_integration
    ("update_integration", {"description": "x"}, ["name"], "required"),
    ("update_integration", {"name": "ghost", "description": "x"}, None, "No integration named 'ghost'"),
    ("update_integration", {"name": "mindbody", "baseUrl": 5}, ["baseUrl"], "string"),
    ("update_integration", {"name": "mindbody", "auth": {"type": "basic", "secret": "{{env.PW}}"}}, ["auth.username"], "username"),
    ("update_integration", {"name": "mindbody", "endpoints": [MINDBODY["endpoints"][1]]}, ["endpoints"], "GET /classes"),
    # delete_integration
    ("delete_integration", {}, ["name"], "required"),
    ("delete_integration", {"name": "ghost"}, None, "No integration named 'ghost'"),
    ("delete_integration", {"name": "mindbody"}, ["name"], "GET /classes"),
    # create_route
    ("create_route", {}, ["path", "method", "integrations"], "required"),
    ("create_route", {"path": "/x", "method": "fetch", "integrations": actions({"integration": "mindbody", "action": "listClasses"})}, ["method"], "fetch"),
    ("create_route", {"path": "x", "method": "get", "integrations": actions({"integration": "mindbody", "action": "listClasses"})}, ["path"], "'/'"),
    ("create_route", {"path": "/x", "method": "get", "integrations": actions()}, ["integrations.actions"], "non-empty"),
    ("create_route", {"path": "/x", "method": "get", "integrations": actions({"integration": "ghost", "action": "listClasses"})},
     ["integrations.actions[0].integration"], "ghost"),
    ("create_route", {"path": "/x", "method": "get", "integrations": actions({"integration": "mindbody", "action": "cancelClass"})},
     ["integrations.actions[0].action"], "cancelClass"),
    ("create_route", {**CLASSES, "method": "GET"}, ["path"], "already exists"),
    ("create_route", {"path": "/x", "method": "get", "integrations": actions(
        {"id": "a", "integration": "mindbody", "action": "listClasses", "params": {"x": "{{steps.b.result}}"}},
        {"id": "b", "integration": "mindbody", "action": "bookClass"})}, ["integrations.actions[0].params"], "'b'"),
    ("create_route", {"path": "/x", "method": "get", "integrations": actions({"integration": "mindbody", "action": "listClasses"}),
                      "response": "{{steps.nope.result}}"}, ["response"], "nope"),
    ("create_route", {"path": "/x", "method": "get", "requireAuth": "yes",
                      "integrations": actions({"integration": "mindbody", "action": "listClasses"})}, ["requireAuth"], "boolean"),
    ("create_route", {"path": "/x", "method": "get", "integrations": actions(
        {"integration": "mindbody", "action": "listClasses", "params": {"id": "{{request.params.id}}"}})},
     ["integrations.actions[0].params"], "{id}"),
    # list_routes
    ("list_routes", {"path": "/classes"}, None, "path"),
    # get_route
    ("get_route", {"path": "/classes"}, ["method"], "required"),
    ("get_route", {"path": "/nope", "method": "get"}, None, "No route GET /nope"),
    # update_route
    ("update_route", {"path": "/classes", "description": "x"}, ["method"], "required"),
    ("update_route", {"path": "/ghost", "method": "get", "description": "x"}, None, "No route GET /ghost"),
    ("update_route", {"path": "/classes", "method": "get", "integrations": actions({"integration": "mindbody", "action": "cancelClass"})},
     ["integrations.actions[0].action"], "cancelClass"),
    ("update_route", {"path": "/classes", "method": "get", "newPath": "/bookings", "newMethod": "POST"}, ["path"], "already exists"),
    ("update_route", {"path": "/classes", "method": "get", "requireAuth": "no"}, ["requireAuth"], "boolean"),
    # delete_route
    ("delete_route", {}, ["path", "method"], "required"),
    ("delete_route", {"path": "/ghost", "method": "delete"}, None, "No route DELETE /ghost"),
    # test_route, call_endpoint, import_openapi: refused before any call goes out
    ("test_route", {"method": "get"}, ["path"], "required"),
    ("test_route", {"method": "fetch", "path": "/classes"}, ["method"], "fetch"),
    ("test_route", {"method": "get", "path": "/classes", "query": {"from": 5}}, ["query.from"], "string"),
    ("call_endpoint", {"integration": "mindbody"}, ["endpoint"], "required"),
    ("call_endpoint", {"integration": "ghost", "endpoint": "listClasses"}, None, "No integration named 'ghost'"),
    ("call_endpoint", {"integration": "mindbody", "endpoint": "cancelClass"}, ["endpoint"], "cancelClass"),
    ("import_openapi", {"integration": "crm"}, ["spec"], "spec"),
    ("import_openapi", {"integration": "crm", "spec": "openapi: [3.1"}, ["spec"], "YAML"),
    ("import_openapi", {"integration": "crm", "spec": {"openapi": "2.0", "info": {}, "paths": {}}}, ["spec"], "3.0 or 3.1"),
    ("import_openapi", {"integration": "mindbody", "spec": {"openapi": "3.1.0", "info": {"title": "x", "version": "1"},
                                                            "servers": [{"url": "https://x.example.com"}],
                                                            "paths": {"/a": {"get": {"responses": {"200": {"description": "ok"}}}}}}},
     ["integration"], "update: true"),
]


def test_every_tool_has_bad_input_cases():
    assert {case[0] for case in CASES} == LOCAL_TOOLS


def test_bad_input_gives_is_error_naming_the_field_and_changes_nothing(site, tmp_path):
    failures = []

    async def main():
        async with mcp_server(site.mcp_config, cwd=tmp_path) as client:
            await client.ok("create_integration", MINDBODY)
            await client.ok("create_route", CLASSES)
            await client.ok("create_route", BOOKINGS)
            for tool, arguments, fields, fragment in CASES:
                before = site.files()
                data, text = await client.error(tool, arguments)
                label = f"{tool}({arguments})"
                if fields is not None:
                    errors = data.get("errors")
                    missing = [f for f in fields if not (errors and f in errors)]
                    if missing:
                        failures.append(f"{label}: errors {errors} do not name {missing}")
                    for f in fields:
                        if f not in text:
                            failures.append(f"{label}: message does not mention {f!r}: {text}")
                if fragment.lower() not in text.lower():
                    failures.append(f"{label}: expected {fragment!r} in {text}")
                if site.files() != before:
                    failures.append(f"{label}: changed the files")
                site.assert_no_temp_files()
                # still serving, and still the same state
                assert len((await client.ok("list_routes"))["routes"]) == 2
            data, text = await client.error("drop_everything", {})
            assert "Unknown tool" in data["error"] and "list_routes" in data["error"]
            # the writes that were refused can still be done right
            await client.ok("create_integration", {"name": "crm", "baseUrl": URL})
            await client.ok("delete_integration", {"name": "crm"})

    run(main)
    assert not failures, "\n".join(failures)

