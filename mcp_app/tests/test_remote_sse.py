"""The seed's SSE flow on the wire (raw httpx against a real daphne), and every way to get it wrong.

GET /mcp/sse -> `event: endpoint` with `/mcp/messages?sessionId=SID`; each POST there answers 202
and the JSON-RPC answer arrives on the stream as `event: message`.
"""

import json
import time

import anyio

from mcp_app.tests.test_remote_support import (
    all_tools,
    bearer,
    exchange,
    handshake,
    initialize,
    key_prefix,
    orm_in_loop,
    post_json,
    raw_client,
    raw_sse,
    rpc,
    run,
)
from tenants import services as tenant_services

LIST_INTEGRATIONS = rpc("tools/call", {"name": "list_integrations", "arguments": {}}, id=4)


def assert_401(response):
    assert response.status_code == 401, (response.status_code, response.text)
    assert response.headers.get("www-authenticate", "").startswith("Bearer"), response.headers
    assert response.json()["error"]


async def assert_session_gone(http, endpoint, credential, timeout=5.0):
    """The server drops the session when its stream closes: POSTs to it become 404."""
    with anyio.fail_after(timeout):
        while True:
            response = await post_json(http, endpoint, rpc("ping", id=99), credential)
            if response.status_code == 404:
                return
            assert response.status_code == 202, response.text
            await anyio.sleep(0.05)


def test_sse_flow_answers_on_the_stream_and_refuses_bad_requests(acme, globex, live_daphne):
    server = live_daphne()
    same_tenant_other_key = acme.key_with("integrations:read", "integrations:write", name="other")
    jwt = acme.jwt()

    async def main():
        async with raw_client(server) as http:
            async with raw_sse(http, f"/mcp/sse?token={acme.key}") as stream:
                assert stream.response.headers["cache-control"] == "no-store"
                info = await handshake(http, stream, acme.key)
                assert info["capabilities"]["tools"] is not None
                tools = (await exchange(http, stream, acme.key, rpc("tools/list", id=3)))["result"]["tools"]
                assert {t["name"] for t in tools} == all_tools()
                answer = await exchange(http, stream, acme.key, LIST_INTEGRATIONS)
                assert answer["result"]["isError"] is False
                assert answer["result"]["structuredContent"] == {"integrations": []}
                assert json.loads(answer["result"]["content"][0]["text"]) == {"integrations": []}

                # Opened with ?token=: the endpoint hands the same credential back, so a client given
                # only the URL authenticates every message with it.
                assert stream.endpoint.endswith(f"&token={acme.key}"), stream.endpoint
                endpoint = stream.endpoint.partition("&token=")[0]
                ping = rpc("ping", id=50)
                # Another principal's session does not exist for you: another key of the same
                # tenant, a key of another tenant, a JWT of the tenant's owner.
                for other in (same_tenant_other_key, globex.key, jwt):
                    response = await post_json(http, endpoint, ping, other)
                    assert response.status_code == 404, (other[:12], response.status_code, response.text)
                response = await post_json(http, "/mcp/messages?sessionId=" + "0" * 32, ping, acme.key)
                assert response.status_code == 404, response.text
                response = await post_json(http, "/mcp/messages", ping, acme.key)
                assert response.status_code == 400 and "sessionId" in response.json()["error"], response.text

                # Credentials: none, garbage, a well-formed but unknown key, the wrong scheme.
                assert_401(await post_json(http, endpoint, ping))
                assert_401(await post_json(http, endpoint, ping, "not-a-credential"))
                assert_401(await post_json(http, endpoint, ping, "bf_abcdefgh_" + "x" * 43))
                assert_401(await post_json(http, endpoint, ping, headers={"Authorization": f"Basic {acme.key}"}))

                # Bodies.
                response = await post_json(http, endpoint, b'{"jsonrpc": "2.0", "id": 7, "method":', acme.key)
                assert response.status_code == 400, response.text
                assert response.json() == {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": response.json()["error"]["message"]}}
                # Valid JSON that is not one JSON-RPC message: an invalid request.
                for garbage in (b'[1, "two", {"three": 3}]', b'{"hello": "world"}', b"[]", b'"just a string"'):
                    response = await post_json(http, endpoint, garbage, acme.key)
                    assert response.status_code == 400, (garbage, response.status_code, response.text)
                    assert response.json()["error"]["code"] == -32600, response.text
                response = await http.post(endpoint, content=json.dumps(ping), headers={**bearer(acme.key), "Content-Type": "text/plain"})
                assert response.status_code == 415, response.text
                response = await http.post(endpoint, content=b"", headers=bearer(acme.key))
                assert response.status_code == 415, response.text
                huge = json.dumps(rpc("tools/call", {"name": "list_integrations", "arguments": {"pad": "x" * (1024 * 1024)}}, id=8))
                response = await post_json(http, endpoint, huge, acme.key)
                assert response.status_code == 413, (response.status_code, response.text[:200])

                # Methods.
                response = await http.get(endpoint, headers=bearer(acme.key))
                assert response.status_code == 405, response.text
                response = await http.post("/mcp/sse", headers=bearer(acme.key))
                assert response.status_code == 405, response.text

                # DNS rebinding: Host and Origin must be allowed hosts, on every MCP URL.
                for path, method in ((endpoint, "POST"), ("/mcp", "POST"), ("/mcp/sse", "GET")):
                    response = await http.request(method, path, content=json.dumps(ping) if method == "POST" else None,
                                                  headers={**bearer(acme.key), "Content-Type": "application/json", "Host": "evil.example"})
                    assert response.status_code == 421, (path, response.status_code, response.text)
                    response = await http.request(method, path, content=json.dumps(ping) if method == "POST" else None,
                                                  headers={**bearer(acme.key), "Content-Type": "application/json", "Origin": "http://evil.example"})
                    assert response.status_code == 403, (path, response.status_code, response.text)
                # A page served from the server's own origin may post.
                response = await post_json(http, endpoint, ping, acme.key, headers={"Origin": server.url})
                assert response.status_code == 202, response.text
                assert (await stream.answer(50))["result"] == {}

                # None of that disturbed the session: nothing stray arrived, and it still answers.
                answer = await exchange(http, stream, acme.key, rpc("tools/call", {"name": "list_integrations", "arguments": {}}, id=9))
                assert answer["result"]["structuredContent"] == {"integrations": []}

            # Closing the stream ends the session.
            await assert_session_gone(http, endpoint, acme.key)
            assert stream.scope is None  # the seed's form: exactly /mcp/messages?sessionId=SID

            # Streamable HTTP has the same guards.
            accept = {"Accept": "application/json, text/event-stream"}
            assert_401(await post_json(http, "/mcp", initialize(), headers=accept))
            assert_401(await post_json(http, "/mcp", initialize(), "garbage", headers=accept))
            response = await post_json(http, "/mcp", huge, acme.key, headers=accept)
            assert response.status_code == 413, (response.status_code, response.text[:200])

    run(main, timeout=60)


def test_sse_credentials_header_jwt_and_revocation(acme, live_daphne):
    server = live_daphne()
    _, revocable = tenant_services.api_key_create(tenant=acme.tenant, actor=acme.actor, name="revocable")
    jwt, other_jwt = acme.jwt(), acme.jwt()

    async def main():
        async with raw_client(server) as http:
            # The stream opened with the Authorization header instead of ?token=.
            async with raw_sse(http, "/mcp/sse", headers=bearer(revocable)) as stream:
                await handshake(http, stream, revocable)
                answer = await exchange(http, stream, revocable, LIST_INTEGRATIONS)
                assert answer["result"]["isError"] is False
                with orm_in_loop():
                    tenant_services.api_key_revoke(tenant=acme.tenant, actor=acme.actor, prefix=key_prefix(revocable))
                # Revoked mid-session: the very next POST is refused, and so is a new stream.
                assert_401(await post_json(http, stream.endpoint, LIST_INTEGRATIONS, revocable))
                response = await http.get("/mcp/sse", headers=bearer(revocable))
                assert_401(response)
                response = await http.get(f"/mcp/sse?token={revocable}")
                assert_401(response)

            # No credentials, or garbage, on the stream itself.
            assert_401(await http.get("/mcp/sse"))
            assert_401(await http.get("/mcp/sse?token=garbage"))
            assert_401(await http.get("/mcp/sse", headers={"Authorization": "Bearer"}))

            # A JWT session: the owner check is tenant + principal, so another token of the same
            # user may post; an API key of the same tenant is another principal.
            async with raw_sse(http, "/mcp/sse", headers=bearer(jwt)) as stream:
                answer = await exchange(http, stream, other_jwt, initialize(id=1))
                assert answer["result"]["serverInfo"]["name"] == "backflow"
                assert (await post_json(http, stream.endpoint, rpc("notifications/initialized"), jwt)).status_code == 202
                answer = await exchange(http, stream, jwt, LIST_INTEGRATIONS)
                assert answer["result"]["structuredContent"] == {"integrations": []}
                response = await post_json(http, stream.endpoint, LIST_INTEGRATIONS, acme.key)
                assert response.status_code == 404, response.text
                endpoint = stream.endpoint
            await assert_session_gone(http, endpoint, jwt)

    run(main, timeout=60)


def test_a_client_given_only_the_sse_url_works_and_each_message_is_still_authenticated(acme, globex, live_daphne):
    """The seed's Method B: one URL, `/mcp/sse?token=KEY`, and no way to add a header. The SDK's
    `sse_client(url)` posts to the endpoint the stream names, which carries the same credential back;
    revoking the key refuses the very next message, another principal's token is 404, and the access
    log never holds the key."""
    from mcp import ClientSession
    from mcp.client.sse import sse_client

    server = live_daphne()
    _, revocable = tenant_services.api_key_create(tenant=acme.tenant, actor=acme.actor, name="url-only")
    other_key = acme.key_with("mcp:use", name="other")

    async def main():
        async with sse_client(f"{server.url}/mcp/sse?token={revocable}", timeout=10) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                assert {t.name for t in (await session.list_tools()).tools} >= {"list_integrations", "create_route"}
                listed = await session.call_tool("list_integrations", {})
                assert listed.is_error is False and listed.structured_content == {"integrations": []}

        # Revocation acts on the very next message (the SDK's client only logs that 401 and waits:
        # shown on the wire instead).
        async with raw_client(server) as http, raw_sse(http, f"/mcp/sse?token={revocable}") as stream:
            assert (await http.post(stream.endpoint, json=rpc("ping", id=1))).status_code == 202
            with orm_in_loop():
                tenant_services.api_key_revoke(tenant=acme.tenant, actor=acme.actor, prefix=key_prefix(revocable))
            assert_401(await http.post(stream.endpoint, json=rpc("ping", id=2)))

        # The session stays bound to its principal: the URL's token swapped for another one is 404.
        async with raw_client(server) as http, raw_sse(http, f"/mcp/sse?token={acme.key}") as stream:
            for other in (globex.key, other_key):
                response = await http.post(stream.endpoint.replace(acme.key, other), json=rpc("ping", id=1))
                assert response.status_code == 404, response.text
            assert (await http.post(stream.endpoint, json=rpc("ping", id=2))).status_code == 202

    run(main, timeout=60)
    for _ in range(50):  # access log lines are written as daphne finishes each request
        log = server.output(tail=None)
        if "POST /mcp/messages?sessionId=" in log:
            break
        time.sleep(0.1)
    assert "token=[redacted]" in log and "POST /mcp/messages?sessionId=" in log, log[-2000:]
    assert revocable not in log and acme.key not in log
