"""Database work from the async doors (MCP transports, tenant routes), with no shared thread.

Outside Django's request handler, asgiref's `sync_to_async()` (thread_sensitive=True) runs every
call of the process on one thread: a single slow call (a tool waiting for a workflow run, a slow
query) made every other tenant's tool calls and route lookups queue behind it. Here each call
takes a thread of a bounded pool instead, and one owner (a tenant) may hold at most
BACKFLOW_SYNC_THREADS_PER_TENANT of them at once, so a busy or hostile tenant queues behind its
own work only. Nothing that waits on a peer (an upstream, an MCP server, a run) waits on one of
these threads: those waits are async.

Each pool thread keeps its own database connection between calls (Django's connections are per
thread); callers check them (`mcp_app.server`, `backflow.outages.reconnecting`).
"""

import asyncio
import contextvars
import functools
import threading
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings

_lock = threading.Lock()  # guards the lazy creation of the pool only, never a call
_pool = None  # made on first use, sized by settings


def _executor():
    global _pool
    if _pool is None:
        with _lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(max_workers=settings.BACKFLOW_SYNC_THREADS, thread_name_prefix="backflow-sync")
    return _pool


async def _on_pool(func, *args, **kwargs):
    """`func` on a pool thread, in a copy of the caller's context (the request id of log lines and
    rows, the tenant's share of name lookups). Not asgiref's SyncToAsync: what it adds for
    thread-sensitive code and async_to_sync inside the thread (a context copied back afterwards,
    the loop recorded for the thread), nothing run here uses, and it cost 20-80 us of CPU a
    trip (bench/load_mcp.py makes two per tool call, bench/load_routes.py one per request)."""
    call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_executor(), call)


class _Share:
    """An owner's slots on one event loop; dropped when nobody holds or waits for one."""

    __slots__ = ("semaphore", "users")

    def __init__(self, size):
        self.semaphore, self.users = asyncio.Semaphore(size), 0


_shares = {}  # (loop id, owner) -> _Share; touched only from its event loop's thread


def on_pool_thread(func):
    """`func` as a coroutine function that runs on a thread of the pool. (In-process tests that
    hold their data in an open transaction replace this to run on the test's own thread.)"""
    return functools.partial(_on_pool, func)


async def in_thread(owner, func, *args, **kwargs):
    """`func(*args, **kwargs)` on a pool thread, counted against `owner`'s share (None: no share,
    for the few steps that come before an owner is known, such as reading a credential)."""
    call = on_pool_thread(func)
    if owner is None:
        return await call(*args, **kwargs)
    key = (id(asyncio.get_running_loop()), owner)
    share = _shares.get(key)
    if share is None:
        share = _shares[key] = _Share(settings.BACKFLOW_SYNC_THREADS_PER_TENANT)
    share.users += 1
    try:
        async with share.semaphore:
            return await call(*args, **kwargs)
    finally:
        share.users -= 1
        if not share.users:
            _shares.pop(key, None)
