"""Redis (the shared cache and the channel layer) stopped and restarted under a live SSE session.

A private redis-server (free port, no persistence) backs one real daphne. While it is down:
- a new SSE stream answers 503 with a JSON error naming Redis and a Retry-After (the session
  registry needs it), never a 500 or a hang; a POST to the live session on the process that holds
  its stream is handed over in memory and answered (a POST on another process would need the
  registry and the channel layer: 503 as well);
- so do sign-ins (JWT): their failures could not be counted, and an unlimited password guesser is
  worse than a short outage of sign-in (API keys keep working);
- everything that only *uses* the cache keeps working from the database: REST reads and writes,
  Streamable HTTP tool calls (the rate limit is not counted while its counters are unreachable),
  tenant routes (the route table is read from the database on every call, so a route written
  during the outage is served at once);
- daphne stays up and logs no traceback.
Once Redis is back on the same port, empty: the SSE session opened before the outage answers
again (its stream re-registers the session with its next keep-alive), a new session works, and
every integration and route committed before and during the outage is there. Daphne is never
restarted.
"""

from pathlib import Path

import anyio

from integrations_app import services as integration_services
from integrations_app.models import Integration, Route
from integrations_app.stores import DatabaseStore
from integrations_app.tests.test_runtime_helpers import Reply, upstream, upstreams  # noqa: F401 (fixtures)
from mcp_app.tests.test_remote_multiprocess import call, streamable_result
from mcp_app.tests.test_remote_support import (
    bearer,
    exchange,
    handshake,
    initialize,
    post_json,
    raw_client,
    raw_sse,
    rpc,
    run,
)
from tests.faults.helpers import private_redis  # noqa: F401 (fixture)

STREAMABLE_HEADERS = {"Accept": "application/json, text/event-stream"}
SIGN_IN = {"username": "acme-owner", "password": "a wrong guess", "tenant": "acme"}


def integration_doc(name, server):
    return {"name": name, "baseUrl": server.url, "endpoints": [{"name": "ping", "method": "get", "path": "/ping"}]}


def route_doc(path, integration):
    return {"path": path, "method": "get", "requireAuth": False,
            "integrations": {"actions": [{"id": "ping", "integration": integration, "action": "ping"}]}}


def assert_unavailable(response, what):
    """A clear, retryable refusal: 503, Retry-After, a JSON error naming Redis."""
    assert response.status_code == 503, (what, response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), (what, response.headers)
    body = response.json()
    assert "Redis" in (body.get("error") or body.get("detail")), (what, response.text)
    assert int(response.headers["retry-after"]) >= 1, (what, response.headers)


def names(answer):
    assert answer["result"]["isError"] is False, answer
    return sorted(i["name"] for i in answer["result"]["structuredContent"]["integrations"])


def test_redis_restart_under_a_live_sse_session(acme, live_daphne, private_redis, upstream):  # noqa: F811
    upstream.on("GET", "/ping", Reply(body={"pong": True}))
    # An integration whose OAuth token is cached in Redis: during the outage a token is fetched anew.
    upstream.on("POST", "/token", Reply(body={"access_token": "tok", "expires_in": 3600}))
    integration_services.secret_create(tenant=acme.tenant, actor=acme.actor, name="client_secret", value="cs-1")
    oauth = {**integration_doc("oauth", upstream), "auth": {"type": "oauth2_client_credentials", "tokenUrl": f"{upstream.url}/token",
                                                            "clientId": "backflow", "secret": "client_secret"}}
    integration_services.integration_create(store=DatabaseStore(tenant=acme.tenant, actor=acme.actor), document=oauth)
    integration_services.route_create(store=DatabaseStore(tenant=acme.tenant, actor=acme.actor), document=route_doc("/oauth", "oauth"))
    server = live_daphne(REDIS_URL=private_redis.url, BACKFLOW_EGRESS_ALLOW="127.0.0.1",
                         BACKFLOW_SSE_KEEPALIVE_SECONDS="0.5")
    auth = bearer(acme.key)

    async def main():
        async with raw_client(server) as http:
            async def streamable(message):
                return streamable_result(await http.post("/mcp", json=message, headers={**auth, **STREAMABLE_HEADERS}))

            async with raw_sse(http, "/mcp/sse", headers=auth) as old:
                await handshake(http, old, acme.key)
                created = await exchange(http, old, acme.key, call(2, "create_integration", integration_doc("before", upstream)))
                assert created["result"]["isError"] is False, created
                response = await http.post("/api/routes/", json=route_doc("/before", "before"), headers=auth)
                assert response.status_code == 201, response.text
                assert (await http.get("/t/acme/before")).json() == {"pong": True}
                assert (await http.get("/t/acme/oauth")).json() == {"pong": True}

                private_redis.stop()

                # What needs Redis refuses clearly.
                assert names(await exchange(http, old, acme.key, call(3))) == ["before", "oauth"]  # in memory: no Redis
                assert_unavailable(await http.get("/mcp/sse", headers=auth), "a new SSE stream")
                # Sign-in attempts could not be counted: refused rather than let through unlimited.
                assert_unavailable(await http.post("/api/auth/token", json=SIGN_IN), "a sign-in")
                # What only uses the cache works from the database.
                assert names(await streamable(call(4))) == ["before", "oauth"]
                during = await streamable(call(5, "create_integration", integration_doc("during", upstream)))
                assert during["result"]["isError"] is False, during
                response = await http.post("/api/routes/", json=route_doc("/during", "during"), headers=auth)
                assert response.status_code == 201, response.text
                response = await http.get("/api/integrations/", headers=auth)
                assert response.status_code == 200, response.text
                assert sorted(i["name"] for i in response.json()["results"]) == ["before", "during", "oauth"]
                for path in ("/t/acme/before", "/t/acme/during", "/t/acme/oauth"):
                    response = await http.get(path)
                    assert response.status_code == 200 and response.json() == {"pong": True}, (path, response.text)
                assert server.process.poll() is None, server.output()

                private_redis.start()  # same port, no keys: sessions, versions and counters are gone

                # The old stream re-registers its session with its next keep-alive. Each try has
                # its own id: should a refused try have been delivered all the same, its answer
                # is skipped below instead of being taken for the next one's.
                ping = 100
                with anyio.fail_after(20):
                    while (response := await post_json(http, old.endpoint, rpc("ping", id=ping), acme.key)).status_code != 202:
                        assert response.status_code in (404, 503), response.text
                        ping += 1
                        await anyio.sleep(0.2)
                while (answer := (await old.event()).json()).get("id") != ping:
                    assert 100 <= answer.get("id", 0) < ping, answer
                assert answer["result"] == {}
                assert names(await exchange(http, old, acme.key, call(7))) == ["before", "during", "oauth"]

            async with raw_sse(http, "/mcp/sse", headers=auth) as new:
                await handshake(http, new, acme.key)
                assert names(await exchange(http, new, acme.key, call(2))) == ["before", "during", "oauth"]
            assert streamable_result(await http.post("/mcp", json=initialize(), headers={**auth, **STREAMABLE_HEADERS}))["result"]
            for path in ("/t/acme/before", "/t/acme/during", "/t/acme/oauth"):
                assert (await http.get(path)).json() == {"pong": True}, path
            assert (await http.post("/api/auth/token", json=SIGN_IN)).status_code == 401  # counted and answered again

    try:
        run(main, timeout=80)
    finally:
        log = Path(server.log.name).read_text(errors="replace")
        print(f"--- daphne log ---\n{log[-20000:]}")  # shown by pytest when the test fails
    assert server.process.poll() is None, server.output()
    assert "Traceback" not in log, log[-4000:]
    assert "Redis" in log  # the outage was logged, once per kind of failure
    assert sorted(Integration.objects.for_tenant(acme.tenant).values_list("name", flat=True)) == ["before", "during", "oauth"]
    assert sorted(Route.objects.for_tenant(acme.tenant).values_list("path", flat=True)) == ["/before", "/during", "/oauth"]
