"""Load: 200 concurrent SSE sessions making tool calls, ours against the MCP SDK's own SSE server.

    .venv/bin/python -m bench load_mcp          # about 1 min on an idle 2-CPU machine (1.5 with [pg+redis]); loopback only

Targets, one after the other, each a fresh server process (daphne as `make run` starts it, on uvloop
(backflow.serve_daphne), unless said; the peer on daphne as `python -m daphne` starts it):
- ours: `backflow.asgi:application` on a temporary SQLite file (migrate, create_tenant,
  create_api_key; 5 integrations created over REST), in-memory channel layer and cache, API-key
  auth on the GET /mcp/sse and every POST /mcp/messages;
- ours [uvicorn]: the same, served by `make run SERVER=uvicorn` (backflow.serve_uvicorn: uvicorn on
  uvloop with h11) instead of daphne; also against the peer served that way (peer_uvicorn);
- ours [pg+redis], the production profile, when DATABASE_URL (postgres://...) and REDIS_URL are set
  (bench.support.production_profile; skipped otherwise, and the notes say why): the same on a
  throw-away database made on that Postgres server (dropped after), with the channel layer, cache
  and rate limits in the benchmark's Redis database of that server (emptied after);
- peer: the SDK's low-level `Server` over its `SseServerTransport` (bench.support.PeerApp) listing
  the very tools/list entries ours lists (checked before the load) and answering list_integrations /
  get_integration with the very documents ours answered (no database, no auth, no audit): the floor
  of any server on this SDK and ASGI server with these tools. The same peer run is the peer of both
  profiles. The tools it lists matter to the client, not to the server: the SDK's ClientSession
  compiles a validator for the output schema of each tool it calls, once per session (about 2 ms of
  the client's CPU for list_integrations', 0.8 for get_integration's; all 200 sessions at once in
  the load's first calls), and the client shares the 2 CPUs with the server;
- peer_own_tools: that peer listing its own three tools (echo, list_integrations, get_integration;
  no output schemas), the peer of this bench before it listed ours' tools: rows "bare SDK listing
  its own tools" say what ours' tool definitions cost the clients;
- peer_design_floor: that peer doing, in its cheapest form, the database work our design keeps
  (bench.support.DesignFloor, on ours' SQLite file: the tenant-row read of each POSTed message,
  the tool's read and its audit INSERT per call, each on a pool thread with raw sqlite3). Rows
  "design floor: ... vs peer" say what the design itself costs; "... vs design floor", what our
  code costs above it;
- peer_design_floor_production, with [pg+redis]: the same on ours' throw-away Postgres database
  (psycopg, autocommit; no Redis: a lower bound of the design there), rows "design floor [pg+redis]".

Each target: SESSIONS sessions open at once (GET the stream, `initialize`, `tools/list`: the SDK's
call_tool would otherwise list the tools itself on a session's first call); when all are open (and
0.5 s more, for the last `initialized` notifications to be delivered), each makes CALLS_PER_SESSION
tools/call (list_integrations and get_integration in turn) one after the other; then all close.
Measured: errors (failed sessions count every call they did not make; target zero), call latency
p50/p95/p99, throughput (calls/s from the start of the calls to the last answer), the server's CPU
and the client's (this process) per call over the same span, session-open
p50/p99, and the daphne process's RSS before, at the peak (VmHWM reset before the load) and after
the sessions closed; per session = (peak - before) / sessions.
The client (the MCP SDK's sse_client, one HTTP client per session) runs in this process and
shares the 2 CPUs with the server: ratios ours/peer are the thing to read, not absolute numbers.

Redis round trips (production profile only; the peer uses no Redis): ours reaches Redis through
bench.redis_counter, a counting TCP proxy in its own process (loopback), which counts per client
connection everything sent between two answers of the server as one round trip (a pipeline or a
script is one; INFO commandstats was not used: it counts commands, not round trips, it counts the
commands a script calls too (verified on Redis 7.0: one EVAL of INCR + EXPIRE adds 1 to eval, incr
and expire each), and it is server-wide, so other users of a shared Redis would be counted). Before
each production run the counter is checked against known cases through it (a pipeline of 3 = 1,
a 2-command script = 1, MULTI..EXEC = 1, 3 single commands = 3; bench.redis_counter.check), and
the row is only met when that check passed. Counted windows: from the calls' start to the last
answer, divided by the calls answered = "Redis round trips per tool call" (target <= 2), leaving
out the session records' keep-alive refreshes (SET mcp:sse:*, every BACKFLOW_SSE_KEEPALIVE_SECONDS
per open session: a cost of open sessions, not of calls; counted apart); and from the first
session's GET to the calls' start, divided by the sessions opened = "Redis round trips per session
open" (the stream, its session record, `initialize`, `initialized` and `tools/list`). The round trips of each
kind are in `targets.production.redis.*.shapes`. The proxy adds a loopback hop to each round trip
of ours [pg+redis] and uses CPU of its own (`counterCpuMsPerCall`, not in ours' server CPU).
"""

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bench import redis_counter
from bench.support import (
    PRODUCTION, UVICORN, Child, Memory, create_platform, free_port, latency_ms, mib, peer_env, platform_env, print_rows,
    production_profile, production_stores, raise_open_files, row, stop_all, tool_entries, write_tool_list,
)

TARGETS = ("ours", "uvicorn", "production", "peer", "peer_uvicorn", "peer_design_floor", "peer_design_floor_production",
           "peer_own_tools")
SESSIONS = 200
CALLS_PER_SESSION = 10
INTEGRATIONS = 5
TARGET_BUDGET = 75  # seconds per target: the load is cut off there (and reported as timed out)
ROUND_TRIPS_TARGET = 2  # Redis round trips per tool call
STEP_TIMEOUT = 30  # seconds for opening a session and for each call: the SDK client waits forever for an
# answer whose POST failed (it logs the failure and drops the message), so an error must not hang the run


async def load(url, headers, calls, memory, budget, counter=None):
    """SESSIONS sessions open together, then each makes its calls; the numbers of that (and of the
    Redis round trips, when `counter`, the bench.redis_counter child between ours and Redis, is given)."""
    import anyio
    from mcp import ClientSession
    from mcp.client.sse import sse_client

    total = SESSIONS * CALLS_PER_SESSION
    open_times, call_times, failures = [], [], []
    count = {"opened": 0, "openFailed": 0, "ok": 0, "errorResults": 0, "settled": 0, "finished": 0}
    all_open, go, done = anyio.Event(), anyio.Event(), anyio.Event()
    span, redis = {}, {}

    def mark(name):  # the Redis round trips so far, and the counter's CPU time
        if counter:
            redis[name] = {**redis_counter.snapshot(counter.control), "cpu": counter.cpu_seconds()}

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
            span["clientCpuEnd"] = time.process_time()
            mark("end")
            done.set()

    async def one(n):
        opened = finished = False
        try:
            started = time.perf_counter()
            opening = anyio.CancelScope(deadline=anyio.current_time() + STEP_TIMEOUT)  # connect, initialize, list the tools
            with opening:
                async with sse_client(url, headers=headers, timeout=60, sse_read_timeout=300) as (read, write):
                    async with ClientSession(read, write) as session:
                        await session.initialize()
                        await session.list_tools()  # as clients do on connecting; else the SDK's call_tool lists them on the first call
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
    mark("begin")
    began = time.perf_counter()
    with anyio.move_on_after(budget) as limit:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(sampler)
            for n in range(SESSIONS):
                tasks.start_soon(one, n)
            await all_open.wait()
            open_rss = memory.child.rss_kib()
            await anyio.sleep(0.5)  # the last sessions' `initialized` notifications are delivered before the calls
            mark("open")
            span["start"], span["cpuStart"] = time.perf_counter(), memory.child.cpu_seconds()
            span["clientCpuStart"] = time.process_time()
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
        "clientCpuMsPerCall": round((span["clientCpuEnd"] - span["clientCpuStart"]) * 1000 / len(call_times), 3)
        if "clientCpuEnd" in span and call_times else None,
        "memory": {**memory.report(per=SESSIONS), "allOpenKiB": open_rss,
                   "idlePerSessionKiB": round((open_rss - memory.before) / SESSIONS, 1) if open_rss else None},
    }
    if counter:
        for name in ("open", "end"):  # a load cut off by the budget: counted up to here
            if name not in redis:
                mark(name)
        result["redis"] = round_trips(redis, len(call_times), count["opened"])
    if failures:
        result["firstFailures"] = failures[:5]
    return result


def _session_record(shape):
    """A round trip that only writes SSE session records (SET/DEL mcp:sse:<id>): a stream's keep-alive
    refresh (or its open or close), not a part of a tool call."""
    return all(part.split(" ", 1)[0] in ("SET", "DEL") and "mcp:sse:" in part for part in shape.split(" + "))


def round_trips(marks, calls, sessions):
    """Redis round trips of the session opening (begin..open) and of the calls (open..end)."""
    opening = redis_counter.difference(marks["open"], marks["begin"])
    calling = redis_counter.difference(marks["end"], marks["open"])
    records = sum(n for shape, n in calling["shapes"].items() if _session_record(shape))
    return {
        "sessionOpen": opening, "calls": calling, "sessionRecordRoundTripsDuringCalls": records,
        "roundTripsPerCall": round((calling["roundTrips"] - records) / calls, 2) if calls else None,
        "commandsPerCall": round((calling["commands"] - records) / calls, 2) if calls else None,
        "roundTripsPerSessionOpen": round(opening["roundTrips"] / sessions, 2) if sessions else None,
        "perCall": {shape: round(n / calls, 2) for shape, n in calling["shapes"].items() if not _session_record(shape)} if calls else {},
        "counterCpuMsPerCall": round((marks["end"]["cpu"] - marks["open"]["cpu"]) * 1000 / calls, 3) if calls else None,
    }


def run_target(child, url, headers, calls, counter=None):
    import logging

    import anyio

    logging.getLogger("mcp.client.sse").setLevel(logging.CRITICAL)  # failures are counted, not printed

    raise_open_files(4 * SESSIONS + 256)
    memory = Memory(child)
    time.sleep(0.5)  # let the fresh server settle before "before"
    outcome = anyio.run(load, url, headers, calls, memory, TARGET_BUDGET, counter)
    if not child.alive():
        outcome["serverDied"] = child.output(1500)
    return outcome


async def _listed(base_url):
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with httpx2.AsyncClient(timeout=30) as http:
        async with streamable_http_client(f"{base_url}/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return tool_entries(await session.list_tools())


def lists_the_same(base_url, tool_list):
    """Whether the server at `base_url` lists the tools of the file `tool_list` (over Streamable HTTP)."""
    import anyio

    return anyio.run(_listed, base_url) == json.loads(tool_list.read_text())


def seed(base_url, key, tool_list=None):
    """5 integrations over REST; our answers to the calls the load makes (the peer gives the same),
    and ours' tools/list entries written to `tool_list` when given (the peer lists the same:
    BENCH_PEER_TOOL_LIST)."""
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
                    if tool_list:
                        write_tool_list(await session.list_tools(), tool_list)
                    for name, arguments in calls:
                        result = await session.call_tool(name, arguments)
                        assert not result.is_error, result.content[0].text
                        if name == "list_integrations":
                            data[name] = result.structured_content
                        else:
                            data[name][arguments["name"]] = result.structured_content
        return data

    return calls, anyio.run(answers)


def summarize(results, check=None):
    """Table rows: ours (and ours [pg+redis]) against the peer; `check`: the round-trip counter's."""
    peer = results["peer"]
    peer_lat = peer["callLatencyMs"] or {}
    rows = []
    for name, tag in (("ours", ""), ("uvicorn", UVICORN), ("production", PRODUCTION)):
        ours = results.get(name)
        if not ours:
            continue
        lat = ours["callLatencyMs"] or {}
        rows.append(row(f"errors{tag}", ours["errors"], peer["errors"], ratio_of=False, target="0", met=ours["errors"] == 0 and not ours["timedOut"]))
        for p in ("p50", "p95", "p99"):
            rows.append(row(f"call {p} ms{tag}", lat.get(p), peer_lat.get(p), ratio_of=p != "p95"))
        rows.append(row(f"calls/s{tag}", ours["callsPerSecond"], peer["callsPerSecond"]))
        rows.append(row(f"server CPU ms per call{tag}", ours["serverCpuMsPerCall"], peer["serverCpuMsPerCall"]))
        rows.append(row(f"client CPU ms per call{tag}", ours["clientCpuMsPerCall"], peer["clientCpuMsPerCall"]))
        rows.append(row(f"session open p99 ms{tag}", (ours["openLatencyMs"] or {}).get("p99"), (peer["openLatencyMs"] or {}).get("p99")))
        rows.append(row(f"RSS before/peak/after MiB{tag}", mib(ours["memory"]), mib(peer["memory"]), ratio_of=False))
        rows.append(row(f"KiB per session{tag}", ours["memory"]["perItemKiB"], peer["memory"]["perItemKiB"]))
        bare = results.get("peer_uvicorn")
        if name == "uvicorn" and bare:  # against the bare SDK served by uvicorn too: the same server under both
            rows.append(row(f"calls/s{tag} vs bare SDK on uvicorn", ours["callsPerSecond"], bare["callsPerSecond"]))
            rows.append(row(f"server CPU ms per call{tag} vs bare SDK on uvicorn", ours["serverCpuMsPerCall"],
                            bare["serverCpuMsPerCall"]))
        if ours.get("redis"):
            per_call = ours["redis"]["roundTripsPerCall"]
            rows.append(row("Redis round trips per tool call", per_call, target=f"<= {ROUND_TRIPS_TARGET}",
                            met=per_call is not None and per_call <= ROUND_TRIPS_TARGET and bool(check and check["ok"])))
            rows.append(row("Redis commands per tool call", ours["redis"]["commandsPerCall"]))
            rows.append(row("Redis round trips per session open", ours["redis"]["roundTripsPerSessionOpen"]))
    # The design's own floors: the peer plus the tenant-row read, the tool's read and its audit INSERT.
    for floor_name, name, tag in (("peer_design_floor", "ours", ""), ("peer_design_floor_production", "production", PRODUCTION)):
        floor, ours = results.get(floor_name), results.get(name)
        if not floor:
            continue
        rows.append(row(f"design floor{tag}: errors", floor["errors"], ratio_of=False))
        rows.append(row(f"design floor{tag}: calls/s vs peer", floor["callsPerSecond"], peer["callsPerSecond"]))
        rows.append(row(f"design floor{tag}: CPU ms per call vs peer", floor["serverCpuMsPerCall"], peer["serverCpuMsPerCall"]))
        rows.append(row(f"design floor{tag}: call p50 ms vs peer", (floor["callLatencyMs"] or {}).get("p50"), peer_lat.get("p50")))
        if ours:
            rows.append(row(f"calls/s{tag} vs design floor{tag}", ours["callsPerSecond"], floor["callsPerSecond"]))
            rows.append(row(f"server CPU ms per call{tag} vs design floor{tag}", ours["serverCpuMsPerCall"], floor["serverCpuMsPerCall"]))
    # The peer listing its own three tools (no output schemas): what ours' tool definitions cost the clients.
    own, ours = results.get("peer_own_tools"), results.get("ours")
    if own:
        rows.append(row("bare SDK listing its own tools: calls/s vs peer", own["callsPerSecond"], peer["callsPerSecond"]))
        rows.append(row("bare SDK listing its own tools: client CPU ms per call vs peer", own["clientCpuMsPerCall"], peer["clientCpuMsPerCall"]))
        if ours:
            rows.append(row("calls/s vs bare SDK listing its own tools", ours["callsPerSecond"], own["callsPerSecond"]))
    return rows


def start_counter(redis_url, workdir):
    """bench.redis_counter in front of the Redis server of `redis_url`; (the child, ours' REDIS_URL through it)."""
    parts = urlsplit(redis_url)
    control = free_port()
    port = free_port()
    counter = Child(["-m", "bench.redis_counter", "--upstream", f"{parts.hostname}:{parts.port or 6379}", "--port", port,
                     "--control", control], peer_env(), workdir / "redis-counter.log", port)
    counter.control = control
    credentials = parts.netloc.rpartition("@")[0]
    through = urlunsplit(parts._replace(netloc=f"{credentials + '@' if credentials else ''}127.0.0.1:{port}"))
    return counter, through


def main(argv=None):
    global SESSIONS, CALLS_PER_SESSION
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=SESSIONS)
    parser.add_argument("--calls", type=int, default=CALLS_PER_SESSION, help="tool calls per session")
    parser.add_argument("--only", default=",".join(TARGETS), help=f"comma-separated targets of {', '.join(TARGETS)}")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra environment of ours (e.g. CONN_MAX_AGE=60)")
    args = parser.parse_args(argv)
    extra_env = dict(item.split("=", 1) for item in args.env)
    SESSIONS, CALLS_PER_SESSION, only = args.sessions, args.calls, args.only.split(",")
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="backflow-bench-load-mcp-"))
    children, results, check, production_database = [], {}, None, None
    database_server, redis_url, skipped = production_profile() if "production" in only else (None, None, "production profile not asked for (--only)")
    try:
        with ExitStack() as stack:
            env = platform_env(f"sqlite:///{workdir / 'bench.sqlite3'}", **extra_env)
            key = create_platform(env)
            headers = {"Authorization": f"Bearer {key}"}
            seeder = Child.backflow_daphne("backflow.asgi:application", env, workdir / "seed.log")
            children.append(seeder)
            tool_list = workdir / "ours-tools.json"
            calls, answers = seed(seeder.url, key, tool_list)
            seeder.stop()
            for name in only:
                counter = None
                if name in ("ours", "uvicorn"):
                    app, target_env, path, target_headers = "backflow.asgi:application", env, "/mcp/sse", headers
                elif name == "production":
                    if not database_server:
                        continue
                    database_url = production_database = stack.enter_context(production_stores(database_server, redis_url))
                    stack.callback(stop_all, children)  # before the database is dropped
                    production_env = platform_env(database_url, redis_url, **extra_env)
                    production_key = create_platform(production_env)
                    seeder = Child.backflow_daphne("backflow.asgi:application", production_env, workdir / "production-seed.log")
                    children.append(seeder)
                    seed(seeder.url, production_key)  # the same integrations (the peer keeps the SQLite answers)
                    seeder.stop()
                    counter, counted_url = start_counter(redis_url, workdir)
                    children.append(counter)
                    check = redis_counter.check(counter.port, counter.control, int(urlsplit(redis_url).path.strip("/") or 0))
                    print(f"load_mcp: Redis round-trip counter check: counted {check['counted']} of {check['expected']['roundTrips']} "
                          f"round trips, {check['commands']} of {check['expected']['commands']} commands: "
                          f"{'ok' if check['ok'] else 'WRONG'}", flush=True)
                    app, path = "backflow.asgi:application", "/mcp/sse"
                    target_env, target_headers = platform_env(database_url, counted_url, **extra_env), {"Authorization": f"Bearer {production_key}"}
                elif name in ("peer", "peer_uvicorn", "peer_design_floor", "peer_design_floor_production", "peer_own_tools"):
                    if name == "peer_design_floor_production" and not production_database:
                        continue  # after "production" only, on its database
                    floors = {"peer_design_floor": workdir / "bench.sqlite3", "peer_design_floor_production": production_database}
                    floor = {"BENCH_PEER_DATABASE": floors[name]} if name in floors else {}
                    listing = {} if name == "peer_own_tools" else {"BENCH_PEER_TOOL_LIST": tool_list}
                    app, target_env, path, target_headers = "bench.support:peer_app", peer_env(BENCH_PEER_TOOLS=json.dumps(answers), **listing, **floor), "/sse", {}
                else:
                    raise SystemExit(f"unknown target {name}; choose from {', '.join(TARGETS)}")
                if name == "uvicorn":
                    child = Child.backflow_uvicorn(target_env, workdir / f"{name}.log")
                elif name == "peer_uvicorn":
                    child = Child.peer_uvicorn(app, target_env, workdir / f"{name}.log")
                elif name in ("peer", "peer_own_tools"):  # the peer: daphne as `python -m daphne` starts it
                    child = Child.daphne(app, target_env, workdir / f"{name}.log")
                else:  # ours, and the design floor on ours' server
                    child = Child.backflow_daphne(app, target_env, workdir / f"{name}.log")
                children.append(child)
                if "BENCH_PEER_TOOL_LIST" in target_env and not lists_the_same(child.url, tool_list):
                    raise SystemExit(f"{name} does not list the tools ours lists")
                print(f"load_mcp: {name} ...", flush=True)
                results[name] = run_target(child, child.url + path, target_headers, calls, counter)
                child.stop()
                if counter:
                    counter.stop()
            stop_all(children)
    finally:
        stop_all(children)
        shutil.rmtree(workdir, ignore_errors=True)

    rows = summarize(results, check) if "peer" in results else []
    production = (f"{PRODUCTION.strip()}: ours on a throw-away Postgres database, channel layer, cache and rate limits in Redis "
                  f"{redis_url} reached through a counting proxy (bench.redis_counter; its check: "
                  f"{'ok' if check and check['ok'] else 'FAILED'}), same peer" if "production" in results else skipped)
    about = (f"{SESSIONS} SSE sessions x {CALLS_PER_SESSION} calls (list_integrations/get_integration), one daphne "
             "(ours and the design floor: as `make run` starts it, on uvloop; the peer: `python -m daphne`); "
             f"ours on SQLite (temp file), in-memory layer and cache; [uvicorn]: ours again, served by `make run "
             f"SERVER=uvicorn` (uvicorn on uvloop, h11), also against the peer on uvicorn; {production}; "
             "peer: MCP SDK SseServerTransport + low-level Server listing ours' tools (the same tools/list entries, "
             "output schemas included) with ours' answers, no DB/auth/audit; bare SDK listing its own tools: that peer "
             "listing its three schema-less tools (the client compiles no output-schema validators)"
             + (f"; ours with {' '.join(args.env)}" if args.env else ""))
    outcome = {"about": about, "rows": rows, "targets": results, "redisCounterCheck": check,
               "production": None if "production" in results else skipped, "seconds": round(time.monotonic() - started, 1),
               "zeroErrorsMet": all(r["errors"] == 0 and not r["timedOut"] for n, r in results.items() if not n.startswith("peer"))}
    print_rows(rows, 36)
    for name, result in results.items():
        if not rows:
            print(f"  {name}: errors {result['errors']}, calls/s {result['callsPerSecond']}, latency {result['callLatencyMs']}, "
                  f"memory {result['memory']}")
        if result.get("redis"):
            print(f"  {name} Redis round trips per call, by kind: {result['redis']['perCall']}")
            print(f"  {name} session records refreshed during the calls: {result['redis']['sessionRecordRoundTripsDuringCalls']}; "
                  f"counter CPU ms per call: {result['redis']['counterCpuMsPerCall']}")
        for failure in result.get("firstFailures", []):
            print(f"  {name} failure: {failure}")
    return outcome


if __name__ == "__main__":
    sys.exit(0 if main()["zeroErrorsMet"] else 1)
