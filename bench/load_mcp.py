"""Load: 200 concurrent SSE sessions making tool calls, ours against the MCP SDK's own SSE server.

    .venv/bin/python -m bench load_mcp          # about 1-2 min on an idle 2-CPU machine; loopback only

Targets, one after the other, each a fresh daphne process (`make run`'s server):
- ours: `backflow.asgi:application` on a temporary SQLite file (migrate, create_tenant,
  create_api_key; 5 integrations created over REST), in-memory channel layer and cache, API-key
  auth on the GET /mcp/sse and every POST /mcp/messages;
- ours+redis: the same with REDIS_URL=redis://127.0.0.1:6379/9 (channel layer and cache in
  Redis; skipped when Redis is not there or that database is not empty; emptied after the run);
- peer: the SDK's low-level `Server` over its `SseServerTransport` (bench.support.PeerApp) with
  list_integrations / get_integration tools that answer the very documents ours answered (no
  database, no auth, no audit): the floor of any server on this SDK and ASGI server.

Each target: SESSIONS sessions open at once (GET the stream, `initialize`); when all are open, each
makes CALLS_PER_SESSION tools/call (list_integrations and get_integration in turn) one after the
other; then all close. Measured: errors (failed sessions count every call they did not make;
target zero), call latency p50/p95/p99, throughput (calls/s from the start of the calls to the
last answer), session-open p50/p99, and the daphne process's RSS before, at the peak (VmHWM reset
before the load) and after the sessions closed; per session = (peak - before) / sessions.
The client (the MCP SDK's sse_client, one HTTP client per session) runs in this process and
shares the 2 CPUs with the server: ratios ours/peer are the thing to read, not absolute numbers.
"""

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.support import (
    Child, Memory, create_platform, latency_ms, mib, peer_env, platform_env, raise_open_files, redis_available,
    redis_clean, print_rows, row, stop_all,
)

SESSIONS = 200
CALLS_PER_SESSION = 10
INTEGRATIONS = 5
TARGET_BUDGET = 75  # seconds per target: the load is cut off there (and reported as timed out)
STEP_TIMEOUT = 30  # seconds for opening a session and for each call: the SDK client waits forever for an
# answer whose POST failed (it logs the failure and drops the message), so an error must not hang the run


async def load(url, headers, calls, memory, budget):
    """SESSIONS sessions open together, then each makes its calls; the numbers of that."""
    import anyio
    from mcp import ClientSession
    from mcp.client.sse import sse_client

    total = SESSIONS * CALLS_PER_SESSION
    open_times, call_times, failures = [], [], []
    count = {"opened": 0, "openFailed": 0, "ok": 0, "errorResults": 0, "settled": 0, "finished": 0}
    all_open, go, done = anyio.Event(), anyio.Event(), anyio.Event()
    span = {}

    def settle(key):
        count[key] += 1
        count["settled"] += 1
        if count["settled"] == SESSIONS:
            all_open.set()

    def finish():
        count["finished"] += 1
        if count["finished"] == SESSIONS:
            span["end"] = time.perf_counter()
            span["cpuEnd"] = memory.child.cpu_seconds()
            done.set()

    async def one(n):
        opened = finished = False
        try:
            started = time.perf_counter()
            opening = anyio.CancelScope(deadline=anyio.current_time() + STEP_TIMEOUT)  # connect + initialize
            with opening:
                async with sse_client(url, headers=headers, timeout=60, sse_read_timeout=300) as (read, write):
                    async with ClientSession(read, write) as session:
                        await session.initialize()
                        opening.deadline = math.inf
                        open_times.append(time.perf_counter() - started)
                        opened = True
                        settle("opened")
                        await go.wait()
                        for i in range(CALLS_PER_SESSION):
                            name, arguments = calls[(n + i) % len(calls)]
                            started = time.perf_counter()
                            with anyio.fail_after(STEP_TIMEOUT):
                                result = await session.call_tool(name, arguments)
                            call_times.append(time.perf_counter() - started)
                            if result.is_error:
                                count["errorResults"] += 1
                                failures.append(f"{name}: {result.content[0].text[:200]}")
                            else:
                                count["ok"] += 1
                        finished = True
                        finish()
                        await done.wait()  # every session stays open until all calls are answered
            if opening.cancelled_caught:
                raise TimeoutError(f"not open within {STEP_TIMEOUT} s")
        except Exception as exc:  # counted: every call this session did not make is an error
            failures.append(f"session {n}: {exc.__class__.__name__}: {exc}"[:300])
            if not opened:
                settle("openFailed")
            if not finished:
                finish()

    async def sampler():
        while not done.is_set():
            memory.sample()
            await anyio.sleep(0.1)

    memory.start()
    open_rss = None
    began = time.perf_counter()
    with anyio.move_on_after(budget) as limit:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(sampler)
            for n in range(SESSIONS):
                tasks.start_soon(one, n)
            await all_open.wait()
            open_rss = memory.child.rss_kib()
            span["start"], span["cpuStart"] = time.perf_counter(), memory.child.cpu_seconds()
            go.set()
    memory.stop()
    closed_at = time.perf_counter()
    memory.settle(1.5)
    calls_seconds = span.get("end", closed_at) - span.get("start", began)
    result = {
        "sessions": SESSIONS, "callsPerSession": CALLS_PER_SESSION, "calls": total, "answered": len(call_times),
        "errors": total - count["ok"], "errorResults": count["errorResults"], "sessionsOpened": count["opened"],
        "sessionsFailed": SESSIONS - count["opened"], "timedOut": limit.cancelled_caught,
        "callsSeconds": round(calls_seconds, 2), "callsPerSecond": round(count["ok"] / calls_seconds, 1) if calls_seconds > 0 else None,
        "callLatencyMs": latency_ms(call_times), "openLatencyMs": latency_ms(open_times), "wallSeconds": round(closed_at - began, 2),
        "serverCpuMsPerCall": round((span["cpuEnd"] - span["cpuStart"]) * 1000 / len(call_times), 3)
        if "cpuEnd" in span and call_times else None,
        "memory": {**memory.report(per=SESSIONS), "allOpenKiB": open_rss,
                   "idlePerSessionKiB": round((open_rss - memory.before) / SESSIONS, 1) if open_rss else None},
    }
    if failures:
        result["firstFailures"] = failures[:5]
    return result


def run_target(child, url, headers, calls):
    import logging

    import anyio

    logging.getLogger("mcp.client.sse").setLevel(logging.CRITICAL)  # failures are counted, not printed

    raise_open_files(4 * SESSIONS + 256)
    memory = Memory(child)
    time.sleep(0.5)  # let the fresh server settle before "before"
    outcome = anyio.run(load, url, headers, calls, memory, TARGET_BUDGET)
    if not child.alive():
        outcome["serverDied"] = child.output(1500)
    return outcome


def seed(base_url, key):
    """5 integrations over REST; our answers to the calls the load makes (the peer gives the same)."""
    import anyio
    import httpx
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as api:
        for n in range(INTEGRATIONS):
            api.post("/api/integrations/", json={
                "name": f"bench-{n}", "baseUrl": f"https://api{n}.example.com/v1", "auth": {"type": "bearer", "secret": f"token_{n}"},
                "endpoints": [{"name": "list", "method": "get", "path": "/items"}, {"name": "get", "method": "get", "path": "/items/{id}"}],
            }).raise_for_status()
    calls = [("list_integrations", {})] + [("get_integration", {"name": f"bench-{n}"}) for n in range(INTEGRATIONS)]
    calls = [c for pair in zip([calls[0]] * INTEGRATIONS, calls[1:]) for c in pair]  # list, get 0, list, get 1, ...

    async def answers():
        import httpx2

        data = {"list_integrations": None, "get_integration": {}}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            async with streamable_http_client(f"{base_url}/mcp", http_client=http) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    for name, arguments in calls:
                        result = await session.call_tool(name, arguments)
                        assert not result.is_error, result.content[0].text
                        if name == "list_integrations":
                            data[name] = result.structured_content
                        else:
                            data[name][arguments["name"]] = result.structured_content
        return data

    return calls, anyio.run(answers)


def summarize(results):
    """Table rows: ours (and ours+redis) against the peer."""
    peer = results["peer"]
    rows = []
    for name in ("ours", "ours+redis"):
        ours = results.get(name)
        if not ours:
            continue
        tag = "" if name == "ours" else " [redis]"
        lat, peer_lat = ours["callLatencyMs"] or {}, peer["callLatencyMs"] or {}
        rows.append(row(f"errors{tag}", ours["errors"], peer["errors"], ratio_of=False, target="0", met=ours["errors"] == 0 and not ours["timedOut"]))
        for p in ("p50", "p95", "p99"):
            if name == "ours" or p != "p95":
                rows.append(row(f"call {p} ms{tag}", lat.get(p), peer_lat.get(p), ratio_of=p != "p95"))
        rows.append(row(f"calls/s{tag}", ours["callsPerSecond"], peer["callsPerSecond"]))
        rows.append(row(f"server CPU ms per call{tag}", ours["serverCpuMsPerCall"], peer["serverCpuMsPerCall"]))
        if name == "ours":
            rows.append(row("session open p99 ms", (ours["openLatencyMs"] or {}).get("p99"), (peer["openLatencyMs"] or {}).get("p99")))
        if name == "ours":
            m, pm = ours["memory"], peer["memory"]
            rows.append(row("RSS before/peak/after MiB", mib(m), mib(pm), ratio_of=False))
        rows.append(row(f"KiB per session{tag}", ours["memory"]["perItemKiB"], peer["memory"]["perItemKiB"]))
    return rows


def main(argv=None):
    global SESSIONS, CALLS_PER_SESSION
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=SESSIONS)
    parser.add_argument("--calls", type=int, default=CALLS_PER_SESSION, help="tool calls per session")
    parser.add_argument("--only", default="ours,redis,peer", help="comma-separated targets of ours, redis, peer")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra environment of ours (e.g. CONN_MAX_AGE=60)")
    args = parser.parse_args(argv)
    extra_env = dict(item.split("=", 1) for item in args.env)
    SESSIONS, CALLS_PER_SESSION, only = args.sessions, args.calls, args.only.split(",")
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="backflow-bench-load-mcp-"))
    children, results = [], {}
    redis_ok, redis_note = redis_available() if "redis" in only else (False, "not asked for")
    try:
        env = platform_env(f"sqlite:///{workdir / 'bench.sqlite3'}", **extra_env)
        key = create_platform(env)
        headers = {"Authorization": f"Bearer {key}"}
        seeder = Child.daphne("backflow.asgi:application", env, workdir / "seed.log")
        children.append(seeder)
        calls, answers = seed(seeder.url, key)
        seeder.stop()
        targets = {
            "ours": lambda: ("backflow.asgi:application", env, "/mcp/sse", headers),
            "redis": lambda: ("backflow.asgi:application", platform_env(env["DATABASE_URL"], redis_note, **extra_env), "/mcp/sse", headers),
            "peer": lambda: ("bench.support:peer_app", peer_env(BENCH_PEER_TOOLS=json.dumps(answers)), "/sse", {}),
        }
        for name in only:
            if name == "redis" and not redis_ok:
                continue
            app, target_env, path, target_headers = targets[name]()
            label = "ours+redis" if name == "redis" else name
            child = Child.daphne(app, target_env, workdir / f"{name}.log")
            children.append(child)
            print(f"load_mcp: {label} ...", flush=True)
            results[label] = run_target(child, child.url + path, target_headers, calls)
            child.stop()
    finally:
        stop_all(children)
        if redis_ok:
            redis_clean()
        shutil.rmtree(workdir, ignore_errors=True)

    rows = summarize(results) if "peer" in results else []
    about = (f"{SESSIONS} SSE sessions x {CALLS_PER_SESSION} calls (list_integrations/get_integration), one daphne; "
             f"ours on SQLite (temp file), in-memory layer; [redis]: {redis_note if redis_ok else 'skipped: ' + redis_note}; "
             "peer: MCP SDK SseServerTransport + low-level Server, same answers, no DB/auth/audit"
             + (f"; ours with {' '.join(args.env)}" if args.env else ""))
    outcome = {"about": about, "rows": rows, "targets": results, "seconds": round(time.monotonic() - started, 1),
               "zeroErrorsMet": all(r["errors"] == 0 and not r["timedOut"] for n, r in results.items() if n != "peer")}
    print_rows(rows)
    for name, result in results.items():
        if not rows:
            print(f"  {name}: errors {result['errors']}, calls/s {result['callsPerSecond']}, latency {result['callLatencyMs']}, "
                  f"memory {result['memory']}")
        for failure in result.get("firstFailures", []):
            print(f"  {name} failure: {failure}")
    return outcome


if __name__ == "__main__":
    sys.exit(0 if main()["zeroErrorsMet"] else 1)
