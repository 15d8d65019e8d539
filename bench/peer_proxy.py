"""The peer of bench/load_routes.py: a bare ASGI proxy, served by daphne as `bench.peer_proxy:application`.

GET /items -> GET <BENCH_UPSTREAM_URL>/items through one aiohttp ClientSession per event loop
(made on the first request, as daphne sends no lifespan events; its TCPConnector keeps the
upstream connections open and pools them), answering with the upstream's status, body and
content-type. No authentication, no database, no rate limit, no record of the call: what a route
costs when it only forwards, on the same ASGI server and the HTTP client the route runtime is
moving to (aiohttp). Anything else is 404.
"""

import asyncio
import os

import aiohttp

UPSTREAM = os.environ.get("BENCH_UPSTREAM_URL", "http://127.0.0.1:8001").rstrip("/")
_sessions = {}  # event loop -> its ClientSession (daphne runs one loop; the key keeps a session off other loops)


def _session():
    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None:
        connector = aiohttp.TCPConnector(limit=100, keepalive_timeout=60)
        session = _sessions[loop] = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30))
    return session


async def _answer(send, status, body, content_type):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def application(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["method"] != "GET" or scope["path"] != "/items":
        return await _answer(send, 404, b"not found", b"text/plain")
    async with _session().get(f"{UPSTREAM}/items") as response:
        body = await response.read()
        content_type = response.headers.get("Content-Type", "application/octet-stream").encode("latin-1")
        status = response.status
    await _answer(send, status, body, content_type)
