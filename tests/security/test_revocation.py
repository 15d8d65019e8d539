"""Revoking an API key takes effect at once, on every door of a running server: the REST API, a
Streamable HTTP request, an SSE session opened before the revocation, and the tenant's routes.
The same holds when the tenant is deactivated. Nothing waits for a cache to expire: the very next
request after the write is refused. (OAuth token revocation: tenants/tests/test_oauth_flow.py.)
"""

import asyncio
import json
import time

import pytest

from integrations_app.tests.test_runtime_helpers import Reply, make_integration, make_route
from mcp_app.tests.test_remote_support import (
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

pytestmark = pytest.mark.django_db(transaction=True)

CALL = rpc("tools/call", {"name": "list_integrations", "arguments": {}}, id=7)
STREAMABLE = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25"}


async def _doors(http, stream, key):
    """The status of one request through each door (SSE: the POST to the open session)."""
    sse = await post_json(http, stream.endpoint, CALL, key)
    streamable = await post_json(http, "/mcp", CALL, key, headers=STREAMABLE)
    rest = await http.get("/api/integrations/", headers=bearer(key))
    route = await http.get("/t/acme/things", headers=bearer(key))
    return {"sse": sse.status_code, "streamable": streamable.status_code, "rest": rest.status_code, "route": route.status_code}


@pytest.mark.parametrize("revoke", ["key revoked", "tenant deactivated"])
def test_the_next_request_after_revocation_is_refused_everywhere(revoke, acme, live_daphne, upstream):
    upstream.on("GET", "/things", Reply(body={"things": []}))
    make_integration(acme, "up", upstream.url, [{"name": "listThings", "method": "get", "path": "/things"}])
    make_route(acme, "/things", [{"integration": "up", "action": "listThings"}])
    _, key = tenant_services.api_key_create(tenant=acme.tenant, actor=acme.actor, name="soon revoked")
    server = live_daphne(BACKFLOW_EGRESS_ALLOW="127.0.0.1")

    async def main():
        async with raw_client(server) as http, raw_sse(http, "/mcp/sse", headers=bearer(key)) as stream:
            await handshake(http, stream, key)
            assert (await exchange(http, stream, key, CALL))["result"]["isError"] is False
            (await post_json(http, "/mcp", initialize(), key, headers=STREAMABLE)).raise_for_status()
            assert await _doors(http, stream, key) == {"sse": 202, "streamable": 200, "rest": 200, "route": 200}
            await stream.answer(CALL["id"])  # the SSE call's answer, so the stream holds nothing else

            with orm_in_loop():
                if revoke == "key revoked":
                    tenant_services.api_key_revoke(tenant=acme.tenant, actor=acme.actor, prefix=key_prefix(key))
                else:
                    acme.tenant.is_active = False
                    acme.tenant.save(update_fields=["is_active"])
            refused = await _doors(http, stream, key)
            expected = 401 if revoke == "key revoked" else 403
            assert refused == dict.fromkeys(refused, expected), refused
            # And a new SSE stream is refused too, with a body that says why.
            response = await http.get("/mcp/sse", headers=bearer(key))
            assert response.status_code == expected and json.loads(response.text)["error"], response.text

    run(main, timeout=90)


def test_under_load_every_request_sent_after_revocation_is_refused(acme, live_daphne, upstream):
    """Requests with the same key that come together share one trip to a database thread
    (backflow.sync.GroupedTrips: a key check for MCP, the tenant's admission for routes). A flood
    of them while the key is revoked: whatever was sent after the revocation returned is refused,
    on both doors; with one database thread per tenant, the requests wait in groups."""
    upstream.on("GET", "/things", Reply(body={"things": []}))
    make_integration(acme, "up", upstream.url, [{"name": "listThings", "method": "get", "path": "/things"}])
    make_route(acme, "/things", [{"integration": "up", "action": "listThings"}])
    _, key = tenant_services.api_key_create(tenant=acme.tenant, actor=acme.actor, name="revoked under load")
    server = live_daphne(BACKFLOW_EGRESS_ALLOW="127.0.0.1", BACKFLOW_SYNC_THREADS_PER_TENANT="1")
    sent = []  # (door, when it was sent, status)

    async def flood(http, door, stop):
        while not stop.is_set():
            started = time.monotonic()
            if door == "streamable":
                status = (await post_json(http, "/mcp", CALL, key, headers=STREAMABLE)).status_code
            else:
                status = (await http.get("/t/acme/things", headers=bearer(key))).status_code
            sent.append((door, started, status))

    async def main():
        async with raw_client(server) as http:
            (await post_json(http, "/mcp", initialize(), key, headers=STREAMABLE)).raise_for_status()
            stop = asyncio.Event()
            clients = [asyncio.create_task(flood(http, door, stop)) for door in ("streamable", "route") for _ in range(8)]
            await asyncio.sleep(1.5)
            with orm_in_loop():
                tenant_services.api_key_revoke(tenant=acme.tenant, actor=acme.actor, prefix=key_prefix(key))
            revoked = time.monotonic()
            await asyncio.sleep(1.5)
            stop.set()
            await asyncio.gather(*clients)
            return revoked

    revoked = run(main, timeout=90)
    for door in ("streamable", "route"):
        before = [status for name, started, status in sent if name == door and started < revoked]
        after = [status for name, started, status in sent if name == door and started > revoked]
        assert before.count(200) >= 5 and len(after) >= 5, (door, before, after)  # the flood covered both sides
        assert set(after) == {401}, (door, after)


def test_keys_in_the_query_string_stay_out_of_the_access_log(acme, live_daphne):
    """`GET /mcp/sse?token=KEY` (the contract's SSE door) is logged by daphne as ?token=[redacted]."""
    server = live_daphne()

    async def main():
        async with raw_client(server) as http:
            async with raw_sse(http, f"/mcp/sse?token={acme.key}") as stream:
                await handshake(http, stream, acme.key)
            assert (await http.get("/mcp/sse?token=bf_wrong_key")).status_code == 401

    run(main, timeout=30)
    for _ in range(50):  # the stream's line is written when daphne finishes with it
        log = server.output(tail=None)
        if log.count("/mcp/sse?token=") >= 2:
            break
        time.sleep(0.1)
    assert "GET /mcp/sse?token=[redacted]" in log, log
    assert acme.key not in log and "bf_wrong_key" not in log
