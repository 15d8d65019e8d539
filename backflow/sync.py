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

`GroupedTrips` lets one owner's callers that come together share a trip (a route's admission, an MCP
credential check, a tenant's tool calls).
"""

import asyncio
import contextvars
import functools
import threading
import weakref
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


def _on_pool(func, *args, **kwargs):
    """A future of `func` on a pool thread, in a copy of the caller's context (the request id of
    log lines and rows, the tenant's share of name lookups). Not asgiref's SyncToAsync: what it
    adds for thread-sensitive code and async_to_sync inside the thread (a context copied back
    afterwards, the loop recorded for the thread), nothing run here uses, and it cost 20-80 us of
    CPU a trip (bench/load_mcp.py makes two per tool call, bench/load_routes.py one per request)."""
    call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
    return asyncio.get_running_loop().run_in_executor(_executor(), call)


class _Share:
    """An owner's slots on one event loop; dropped when nobody holds or waits for one."""

    __slots__ = ("semaphore", "users")

    def __init__(self, size):
        self.semaphore, self.users = asyncio.Semaphore(size), 0


# event loop -> {owner: _Share}; an owner's entry touched only from its loop's thread. Held weakly:
# a loop closed while a slot's work still ran on a thread (its caller cancelled: the slot goes back
# only when the work ends, on that loop) takes its shares with it, and a later loop never finds them.
_shares = weakref.WeakKeyDictionary()


class _Slot:
    """`async with _Slot(owner)`: one of `owner`'s BACKFLOW_SYNC_THREADS_PER_TENANT slots on this
    loop (or of `size` slots), held for the block (waited for while the owner holds them all)."""

    __slots__ = ("shares", "owner", "share")

    def __init__(self, owner, size=None):
        loop = asyncio.get_running_loop()
        self.shares = _shares.get(loop)
        if self.shares is None:
            self.shares = _shares[loop] = {}
        share = self.shares.get(owner)
        if share is None:
            share = self.shares[owner] = _Share(size or settings.BACKFLOW_SYNC_THREADS_PER_TENANT)
        share.users += 1
        self.owner, self.share = owner, share

    async def __aenter__(self):
        await self.acquire()

    async def acquire(self):
        """Wait for the slot; cancelled while waiting, nothing is held."""
        try:
            await self.share.semaphore.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc_info):
        self.release()

    def release(self):
        self.share.semaphore.release()
        self._leave()

    def _leave(self):
        self.share.users -= 1
        if not self.share.users:
            self.shares.pop(self.owner, None)


def on_pool_thread(func):
    """`func` as a function whose call is awaited for its result on a thread of the pool (a
    future). (In-process tests that hold their data in an open transaction replace this to run on
    the test's own thread: a coroutine function.)"""
    return functools.partial(_on_pool, func)


async def in_thread(owner, func, *args, **kwargs):
    """`func(*args, **kwargs)` on a pool thread, counted against `owner`'s share (None: no share,
    for the few steps that come before an owner is known, such as reading a credential).

    The share is held until the thread is done, not until the caller stops waiting: a thread
    cannot be stopped, so a caller that is cancelled (a client that hangs up) leaves its work
    running on a thread of the pool, and an owner that hangs up on slow work again and again would
    otherwise hold more threads than its share, and make every other owner wait."""
    call = on_pool_thread(func)
    if owner is None:
        return await call(*args, **kwargs)
    slot = _Slot(owner)
    await slot.acquire()  # cancelled while waiting for it: nothing started, nothing held
    try:
        work = asyncio.ensure_future(call(*args, **kwargs))
    except BaseException:
        slot.release()
        raise
    work.add_done_callback(functools.partial(_work_done, slot))
    return await asyncio.shield(work)


def _work_done(slot, work):
    slot.release()
    if not work.cancelled():
        work.exception()  # its caller may have left: no "exception was never retrieved"


class _Group:
    __slots__ = ("calls", "done", "withdrawn")

    def __init__(self, loop):
        self.calls, self.done, self.withdrawn = [], loop.create_future(), set()


class GroupedTrips:
    """`await trips(owner, item)`: `each(shared, item)` on a pool thread, where `shared` is what
    `prepare(owner, items)` gave once for all the trip's items (None without `prepare`), in one
    trip for the callers of an owner that came together; then `conclude(shared)`, once, before any
    caller of the trip gets its answer (what the items leave for the end: rows to insert, counts).

    A trip costs most of its CPU in the hand-off to the thread and back (hundreds of us on a busy
    VM, more than the work of a cached credential check), so callers of one owner that arrive
    while its slots (BACKFLOW_SYNC_THREADS_PER_TENANT) are taken share the next trip instead of
    queueing for one each: an idle owner's caller still gets a trip of its own at once. A group
    closes when it gets its slot, before its trip starts, so the trip's reads begin after every
    one of its callers arrived (what it reads is as fresh as a trip of the caller's own); at most
    `limit` items go in one trip, one after another. Each item runs in its caller's context (the
    request id of log lines and rows); an item that raises fails its own caller, `prepare` or
    `conclude` raising fails every caller of the trip. The item of a caller cancelled before its
    trip started is not run (as a call still waiting for a slot was never run); one whose trip
    started runs to its end."""

    def __init__(self, each, limit, prepare=None, conclude=None):
        self.each, self.limit, self.prepare, self.conclude = each, limit, prepare, conclude
        self._open = {}  # (loop id, owner) -> the group that is gathering items
        self._running = set()  # the groups' tasks (the loop keeps weak references only)

    async def __call__(self, owner, item):
        loop = asyncio.get_running_loop()
        key = (id(loop), owner)
        group = self._open.get(key)
        if group is None:
            group = self._open[key] = _Group(loop)
            task = loop.create_task(self._trip(key, owner, group))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        index = len(group.calls)
        group.calls.append((contextvars.copy_context(), item))
        if len(group.calls) >= self.limit:
            del self._open[key]  # full: the next caller starts another
        try:
            results = await asyncio.shield(group.done)
        except asyncio.CancelledError:
            group.withdrawn.add(index)
            raise
        result = results[index] if isinstance(results, list) else results
        if isinstance(result, BaseException):
            raise result
        return result

    def _turn(self, owner):
        """The slot a trip of `owner` holds."""
        return _Slot(owner)

    async def _carry(self, owner, calls):
        """The trip itself: `_run` on a pool thread."""
        return await on_pool_thread(self._run)(owner, calls)

    async def _trip(self, key, owner, group):
        try:
            async with self._turn(owner):
                if self._open.get(key) is group:
                    del self._open[key]  # later callers gather for the next trip
                calls = [None if index in group.withdrawn else call for index, call in enumerate(group.calls)]
                results = await self._carry(owner, calls) if any(calls) else [None] * len(calls)
        except BaseException as exc:  # every caller's; a result, so that no caller left is no error
            if self._open.get(key) is group:
                del self._open[key]
            group.done.set_result(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            group.done.set_result(results)

    def _run(self, owner, calls):
        """On the pool thread: each call's result (None for a withdrawn one) or exception."""
        first_context = next(call for call in calls if call is not None)[0]
        shared = first_context.run(self.prepare, owner, [call[1] for call in calls if call is not None]) if self.prepare else None
        results = self._each(shared, calls)
        if self.conclude:
            first_context.run(self.conclude, shared)
        return results

    def _each(self, shared, calls):
        """Each call's result (None for a withdrawn one) or exception, each in its caller's context."""
        results = []
        for call in calls:
            try:
                results.append(None if call is None else call[0].run(self.each, shared, call[1]))
            except Exception as exc:
                results.append(exc)
        return results


class LoopTrips(GroupedTrips):
    """GroupedTrips made on the event loop itself, for work that awaits the network instead of
    holding a thread (backflow.loop_postgres, redis.asyncio): `prepare` and `conclude` are
    coroutine functions, `each` runs on the loop between them (it must not block). An owner has
    one trip at a time: the callers that come meanwhile share the next, which starts when it ends."""

    def _turn(self, owner):
        return _Slot(("on the loop", owner), 1)

    async def _carry(self, owner, calls):  # in the trip's task: the context of its first caller
        shared = await self.prepare(owner, [call[1] for call in calls if call is not None]) if self.prepare else None
        results = self._each(shared, calls)
        if self.conclude:
            await self.conclude(shared)
        return results
