"""The assistant's build–test–fix loop, scripted (no model): the seed's fitness-studio API built
over MCP against loopback stand-ins for Mindbody, Stripe and Twilio, in tenant mode over
Streamable HTTP and in local mode over `mcp_stdio`.

The assistant imports Mindbody from a small OpenAPI document, creates Stripe and Twilio (one
endpoint with a wrong path, on purpose) and the four routes, and test_routes each: the broken one's
trace shows the upstream's 404 and the URL, update_integration fixes it, and test_route then
answers 200. Finally the same routes answer at /t/<tenant>/… (under serve_local in local mode), and
list_route_invocations tells the tests and the real calls apart.
"""

import json

import anyio
import httpx
import pytest

from integrations_app.tests.test_runtime_helpers import Reply, upstreams  # noqa: F401 (fixture)
from mcp_app.tests.helpers import mcp_server, result_json, run
from mcp_app.tests.test_remote_support import sdk_session
from tests.live import ServerProcess

pytestmark = pytest.mark.slow

TOKENS = {"mindbody": "mb-token-7a1", "stripe": "sk-test-5b2", "twilio": "tw-secret-9c3"}


class StandIns:
    """Mindbody, Stripe and Twilio on loopback, answering like the real ones (in small)."""

    def __init__(self, upstreams):
        self.mindbody, self.stripe, self.twilio = upstreams(), upstreams(), upstreams()
        self.mindbody.on("GET", "/public/v6/class/classes", Reply(body={"Classes": [{"Id": 7, "Name": "Yoga"}]}))
        self.mindbody.on("POST", "/public/v6/class/addclienttoclass", Reply(body={"Visit": {"ClassName": "Yoga", "Id": 99}}))
        self.stripe.on("POST", "/v1/subscriptions", Reply(body={"id": "sub_1", "status": "active"}))
        self.stripe.on("GET", "/v1/subscriptions", Reply(body={"data": [{"id": "sub_1"}]}))
        self.stripe.on("POST", "/v1/subscription", Reply(status=404, body={"error": {"message": "Unrecognized request URL"}}))
        self.twilio.on("POST", "/2010-04-01/Accounts/AC42/Messages.json", Reply(body={"sid": "SM1"}))

    def openapi(self):
        """A small OpenAPI 3.1 description of the Mindbody stand-in (the import's input)."""
        return {
            "openapi": "3.1.0",
            "info": {"title": "Mindbody", "version": "6", "description": "Class schedules and bookings"},
            "servers": [{"url": f"{self.mindbody.url}/public/v6"}],
            "security": [{"bearer": []}],
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
            "paths": {
                "/class/classes": {"get": {
                    "operationId": "listClasses", "summary": "Upcoming classes", "tags": ["classes"],
                    "parameters": [{"name": "StartDateTime", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "ok"}}}},
                "/class/addclienttoclass": {"post": {
                    "operationId": "bookClass", "tags": ["classes"],
                    "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
                    "responses": {"200": {"description": "ok"}}}},
                "/sale/sales": {"get": {"operationId": "listSales", "tags": ["sales"], "responses": {"200": {"description": "ok"}}}},
            },
        }


def documents(stand_ins, local):
    """The integrations and routes the assistant writes (credentials by name, or {{env.NAME}} locally)."""
    secret = (lambda name: f"{{{{env.{name.upper()}_TOKEN}}}}") if local else (lambda name: f"{name}_token")
    stripe = {"name": "stripe", "baseUrl": f"{stand_ins.stripe.url}/v1", "auth": {"type": "bearer", "secret": secret("stripe")},
              "endpoints": [{"name": "createSubscription", "method": "post", "path": "/subscription",  # wrong on purpose
                             "body": {"customer": "{{params.customer}}", "price": "{{params.price}}"}},
                            {"name": "listSubscriptions", "method": "get", "path": "/subscriptions"}]}
    twilio = {"name": "twilio", "baseUrl": f"{stand_ins.twilio.url}/2010-04-01",
              "auth": {"type": "basic", "username": "AC42", "secret": secret("twilio")},
              "endpoints": [{"name": "sendSms", "method": "post", "path": "/Accounts/{accountSid}/Messages.json",
                             "body": {"To": "{{params.to}}", "Body": "{{params.text}}"}}]}
    routes = {
        "classes": {"path": "/classes", "method": "get", "requireAuth": False, "integrations": {"actions": [
            {"id": "classes", "integration": "mindbody", "action": "listClasses", "params": {"StartDateTime": "{{request.query.from}}"}}]}},
        "bookings": {"path": "/bookings", "method": "post", "requireAuth": False, "integrations": {"actions": [
            {"id": "book", "integration": "mindbody", "action": "bookClass",
             "params": {"ClientId": "{{request.body.clientId}}", "ClassId": "{{request.body.classId}}"}},
            {"id": "remind", "integration": "twilio", "action": "sendSms",
             "params": {"accountSid": "AC42", "to": "{{request.body.phone}}", "text": "Booked: {{steps.book.result.Visit.ClassName}}"}}]},
            "response": {"booking": "{{steps.book.result.Visit}}", "sms": "{{steps.remind.result.sid}}"}},
        "memberships": {"path": "/memberships", "method": "post", "requireAuth": False, "integrations": {"actions": [
            {"integration": "stripe", "action": "createSubscription",
             "params": {"customer": "{{request.body.customerId}}", "price": "{{request.body.priceId}}"}}]}},
        "dashboard": {"path": "/dashboard", "method": "get", "requireAuth": False, "integrations": {"actions": [
            {"id": "classes", "integration": "mindbody", "action": "listClasses"},
            {"id": "subs", "integration": "stripe", "action": "listSubscriptions"}]},
            "response": {"classes": "{{steps.classes.result.Classes}}", "subscriptions": "{{steps.subs.result.data}}"}},
    }
    return stripe, twilio, routes


TESTS = {  # route name -> test_route arguments
    "classes": {"method": "GET", "path": "/classes", "query": {"from": "2026-12-07"}},
    "bookings": {"method": "POST", "path": "/bookings", "body": {"clientId": "c1", "classId": 7, "phone": "+15550100"}},
    "memberships": {"method": "POST", "path": "/memberships", "body": {"customerId": "cus_1", "priceId": "price_gold"}},
    "dashboard": {"method": "GET", "path": "/dashboard"},
}


async def call(session, name, arguments):
    result = await session.call_tool(name, arguments)
    data = result_json(result)
    assert not result.is_error, f"{name}({arguments}) failed: {data}"
    return data


async def build_and_test(session, stand_ins, local):
    """The assistant's loop; returns the tool calls it made (for the MCP guide's transcript)."""
    imported = await call(session, "import_openapi", {"integration": "mindbody", "spec": stand_ins.openapi(),
                                                      "include": {"tags": ["classes"]}})
    assert imported["outcome"] == "created" and imported["endpoints"] == ["listClasses", "bookClass"], imported
    assert "MINDBODY_TOKEN" in imported["auth"] if local else "mindbody_token" in imported["auth"], imported
    tried = await call(session, "call_endpoint", {"integration": "mindbody", "endpoint": "listClasses"})
    assert tried["upstreamStatus"] == 200 and tried["result"] == {"Classes": [{"Id": 7, "Name": "Yoga"}]}, tried
    assert TOKENS["mindbody"] not in json.dumps(tried)
    stripe, twilio, routes = documents(stand_ins, local)
    await call(session, "create_integration", stripe)
    await call(session, "create_integration", twilio)
    for route in routes.values():
        await call(session, "create_route", route)

    results = {name: await call(session, "test_route", arguments) for name, arguments in TESTS.items()}
    for name in ("classes", "bookings", "dashboard"):
        assert results[name]["status"] == 200, (name, results[name])
    assert results["bookings"]["body"] == {"booking": {"ClassName": "Yoga", "Id": 99}, "sms": "SM1"}
    assert [entry["id"] for entry in results["bookings"]["trace"]] == ["book", "remind"]
    assert {entry["id"] for entry in results["dashboard"]["trace"]} == {"classes", "subs"}

    # The wrong path: the trace shows where the call went and what the upstream said.
    broken = results["memberships"]
    assert broken["status"] == 502, broken
    [entry] = broken["trace"]
    assert entry["upstreamStatus"] == 404 and entry["url"] == f"{stand_ins.stripe.url}/v1/subscription", entry
    assert "the upstream answered 404" in entry["error"] and entry["result"] == {"error": {"message": "Unrecognized request URL"}}
    stripe["endpoints"][0]["path"] = "/subscriptions"
    await call(session, "update_integration", {"name": "stripe", "endpoints": stripe["endpoints"]})
    fixed = await call(session, "test_route", TESTS["memberships"])
    assert fixed["status"] == 200 and fixed["body"] == {"id": "sub_1", "status": "active"}, fixed
    for seen in stand_ins.stripe.calls("/v1/subscriptions"):
        assert seen.headers["authorization"] == f"Bearer {TOKENS['stripe']}"
    return results


def real_calls(base):
    with httpx.Client(base_url=base, timeout=15) as http:
        assert http.get("/classes", params={"from": "2026-12-07"}).json() == {"Classes": [{"Id": 7, "Name": "Yoga"}]}
        assert http.post("/memberships", json={"customerId": "cus_2", "priceId": "price_gold"}).json()["id"] == "sub_1"
        assert http.get("/dashboard").json() == {"classes": [{"Id": 7, "Name": "Yoga"}], "subscriptions": [{"id": "sub_1"}]}


def test_the_loop_in_tenant_mode_over_streamable_http(acme, live_daphne, upstreams):
    from integrations_app import services as integration_services

    for name, value in TOKENS.items():  # a person stores the credentials; the assistant only names them
        integration_services.secret_create(tenant=acme.tenant, actor=acme.actor, name=f"{name}_token", value=value)
    stand_ins = StandIns(upstreams)
    server = live_daphne(BACKFLOW_EGRESS_ALLOW="127.0.0.1")

    async def main():
        async with sdk_session(server.url, "http", acme.key) as s:
            secrets = await call(s.session, "list_secrets", {})
            assert {item["name"] for item in secrets["secrets"]} == {f"{name}_token" for name in TOKENS}
            await build_and_test(s.session, stand_ins, local=False)
            real_calls(f"{server.url}/t/acme")
            # Records are written after the answers, in batches: the last ones may take a moment.
            with anyio.fail_after(15):
                while True:
                    invocations = (await call(s.session, "list_route_invocations", {"limit": 50}))["invocations"]
                    if sum(not i["test"] for i in invocations) >= 3:
                        return invocations
                    await anyio.sleep(0.1)

    invocations = run(main, timeout=120)
    tests = [(i["method"], i["path"], i["status"]) for i in invocations if i["test"]]
    real = [(i["method"], i["path"], i["status"]) for i in invocations if not i["test"]]
    assert sorted(real) == sorted([("get", "/classes", 200), ("post", "/memberships", 200), ("get", "/dashboard", 200)]), invocations
    assert ("post", "/memberships", 502) in tests and tests.count(("post", "/memberships", 200)) == 1 and len(tests) == 5, tests


def test_the_loop_in_local_mode_over_stdio(tmp_path, upstreams):
    stand_ins = StandIns(upstreams)
    (tmp_path / "integrations").mkdir()
    env = {"BACKFLOW_EGRESS_ALLOW": "127.0.0.1", **{f"{name.upper()}_TOKEN": value for name, value in TOKENS.items()}}

    async def main():
        async with mcp_server(cwd=tmp_path, env=env) as client:
            return await build_and_test(client.session, stand_ins, local=True)

    run(main, timeout=120)
    assert json.loads((tmp_path / "integrations" / "mindbody.json").read_text())["auth"] == {
        "type": "bearer", "secret": "{{env.MINDBODY_TOKEN}}"}
    server = ServerProcess(lambda port: ["manage.py", "serve_local", "--port", str(port)], **env, BACKFLOW_LOCAL_TOKEN="local-dev",
                           BACKFLOW_INTEGRATIONS_PATH=str(tmp_path / "integrations"), BACKFLOW_CONFIG_PATH=str(tmp_path / "config.json"))
    try:
        real_calls(f"{server.url}/t/local")
    finally:
        server.stop()
