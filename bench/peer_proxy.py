"""The peers of bench/load_routes.py: a bare ASGI proxy, served by daphne as `bench.peer_proxy:application`.

GET /items -> GET <BENCH_UPSTREAM_URL>/items through one aiohttp ClientSession per event loop
(made on the first request, as daphne sends no lifespan events; its TCPConnector keeps the
upstream connections open and pools them), answering with the upstream's status, body and
content-type. No authentication, no database, no rate limit, no record of the call: what a route
costs when it only forwards, on the same ASGI server and the HTTP client the route runtime is
moving to (aiohttp). Anything else is 404.

With BENCH_TENANT_DATABASE (a SQLite file or a postgres:// URL of ours), each request first reads
the tenant row by its slug (BENCH_TENANT_SLUG) on a thread of a pool, each thread with its own
connection (sqlite3 or psycopg, no ORM), and answers 404 without it: the one piece of work the
issue's design keeps on every routed request (the tenant's state and the version its key cache
checks), in its cheapest form. With BENCH_TENANT_REDIS too (a redis:// URL, the production
profile), the same thread then counts the call there (one INCR, one round trip): the rate-limit
count the design keeps per request where Redis holds the limits. What ours costs above that peer
is our own code.
"""

import asyncio
import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import aiohttp

UPSTREAM = os.environ.get("BENCH_UPSTREAM_URL", "http://127.0.0.1:8001").rstrip("/")
TENANT_DATABASE = os.environ.get("BENCH_TENANT_DATABASE")
TENANT_SLUG = os.environ.get("BENCH_TENANT_SLUG", "bench")
TENANT_REDIS = os.environ.get("BENCH_TENANT_REDIS")
ON_POSTGRES = (TENANT_DATABASE or "").startswith(("postgres://", "postgresql://"))
TENANT_QUERY = f"SELECT * FROM tenants_tenant WHERE slug = {'%s' if ON_POSTGRES else '?'} LIMIT 1"
_sessions = {}  # event loop -> its ClientSession (daphne runs one loop; the key keeps a session off other loops)
_readers = ThreadPoolExecutor(max_workers=8, thread_name_prefix="tenant-read")
_thread = threading.local()  # each reader thread's own connection


def _session():
    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None:
        connector = aiohttp.TCPConnector(limit=100, keepalive_timeout=60)
        session = _sessions[loop] = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30))
    return session


def _tenant_row():
    connection = getattr(_thread, "connection", None)
    if connection is None:
        if ON_POSTGRES:
            import psycopg

            connection = psycopg.connect(TENANT_DATABASE, autocommit=True)
        else:
            connection = sqlite3.connect(TENANT_DATABASE, isolation_level=None)
        _thread.connection = connection
        if TENANT_REDIS:
            import redis

            _thread.counter = redis.Redis.from_url(TENANT_REDIS)
    row = connection.execute(TENANT_QUERY, (TENANT_SLUG,)).fetchone()
    if TENANT_REDIS:
        _thread.counter.incr(f"bench-floor:{TENANT_SLUG}")
    return row


async def _answer(send, status, body, content_type):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def application(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["method"] != "GET" or scope["path"] != "/items":
        return await _answer(send, 404, b"not found", b"text/plain")
    if TENANT_DATABASE and await asyncio.get_running_loop().run_in_executor(_readers, _tenant_row) is None:
        return await _answer(send, 404, b"no tenant", b"text/plain")
    async with _session().get(f"{UPSTREAM}/items") as response:
        body = await response.read()
        content_type = response.headers.get("Content-Type", "application/octet-stream").encode("latin-1")
        status = response.status
    await _answer(send, status, body, content_type)
