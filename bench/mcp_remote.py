"""Benchmark: Backflow's remote MCP transports against a bare MCP SDK server (the peer).

    .venv/bin/python bench/mcp_remote.py        # or `python -m bench mcp_remote`; not part of `make test`

Loopback only. About 1 min on an idle 2-CPU machine; the load phase is cut off at TIME_LIMIT.

- ours: daphne as `make run` starts it (backflow.serve_daphne, on uvloop) serving
  `backflow.asgi:application` on a temporary SQLite file database (a dev
  tenant and key made with `manage.py migrate`, `create_tenant`, `create_api_key`); the tool is
  `list_integrations` over a few integrations (a database read plus an audit row per call).
- ours-uvicorn: the same, served by `make run SERVER=uvicorn` (backflow.serve_uvicorn) on the same
  database (latency only; its ratios end in Uvicorn), against the peer below and against the peer
  served by uvicorn the same way (peer-uvicorn; ratios ending in UvicornVsPeerOnUvicorn);
- peer: the SDK's low-level `Server` with one trivial tool (`echo`), served by the SDK's
  `SseServerTransport` (/sse, /messages/) and `StreamableHTTPSessionManager` (/mcp, stateless like
  ours) as an ASGI app under daphne as `python -m daphne` starts it (bench.support.PeerApp);
- peer-same-answer: that peer on the same server listing ours' tools (the same tools/list entries,
  output schemas included) and answering list_integrations with ours' own answer, so that both
  send the same bytes: the client then parses the same document and validates it against the same
  output schema, which the echo peer spares it (no database). Ratios ending in VsSameAnswer are
  ours/it, SameAnswerVsPeer it/the echo peer;
- peer-floor, the design's floor: the same-answer peer doing, in its cheapest form, the database
  work our design keeps per message (bench.support.DesignFloor: the tenant-row read of each POST,
  the tool's read and its audit INSERT, each on a pool thread, raw sqlite3 on ours' database), on
  ours' server. Ratios ending in VsDesignFloor are ours/it: what our code costs above what the
  design itself needs.

Measured: tools/call p50/p95 over SSE and Streamable HTTP for both (sequential calls on one
session each, ours and the peer in alternating turns); 200 concurrent SSE sessions x 20 calls
each against ours (errors must be zero); the RSS growth of each daphne process per idle
(initialized) SSE session, over 200 sessions. Ratios are ours/peer. `main()` prints a table and
returns the numbers as a dict.

Our per-principal call budget (BACKFLOW_MCP_RATE_LIMIT, 600/min by default) is lifted for ours:
the load test is 4000 calls by one key in well under a minute.
"""

import contextlib
import json
import shutil
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx2
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

if not __package__:  # run as a script (python bench/mcp_remote.py): the project root on the path for `bench.support`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.support import Child, alternating_calls, create_platform, peer_env, percentile, platform_env, stop_all, write_tool_list

SEQUENTIAL_CALLS = 300
WARMUP_CALLS = 30
CONCURRENT_SESSIONS = 200
CALLS_PER_SESSION = 20
IDLE_SESSIONS = 200
INTEGRATIONS = 5
TIME_LIMIT = 150  # seconds: the load phase stops here (the run then ends within about half a minute)


# -- clients -----------------------------------------------------------------------------------

@asynccontextmanager
async def session(url, transport, headers):
    if transport == "sse":
        async with sse_client(url, headers=headers, timeout=60, sse_read_timeout=300) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                yield s
    else:
        async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60, read=300)) as http:
            async with streamable_http_client(url, http_client=http) as (read, write):
                async with ClientSession(read, write) as s:
                    await s.initialize()
                    yield s


def summary_ms(samples):
    return {"p50": round(percentile(samples, 0.50) * 1000, 2), "p95": round(percentile(samples, 0.95) * 1000, 2),
            "max": round(max(samples) * 1000, 2), "n": len(samples)}


async def sequential_latency(sides):
    """{name: summary}: sequential calls on one session per side, `sides` mapping a name to (url,
    transport, headers, tool, arguments), timed in alternating turns (the same load of the machine
    for all)."""
    async with contextlib.AsyncExitStack() as stack:
        calls = {}
        for name, (url, transport, headers, tool, arguments) in sides.items():
            s = await stack.enter_async_context(session(url, transport, headers))

            async def call(i, s=s, tool=tool, arguments=arguments):
                return (await s.call_tool(tool, arguments)).is_error

            calls[name] = call
        timed = await alternating_calls(calls, SEQUENTIAL_CALLS, WARMUP_CALLS)
    return {name: {**summary_ms(samples), "errors": errors} for name, (samples, errors) in timed.items()}


async def concurrent_load(url, headers, tool, arguments, budget):
    samples, failures = [], []
    errors = 0

    async def one_session(n):
        nonlocal errors
        made = 0
        try:
            async with session(url, "sse", headers) as s:
                for _ in range(CALLS_PER_SESSION):
                    started = time.perf_counter()
                    result = await s.call_tool(tool, arguments)
                    samples.append(time.perf_counter() - started)
                    made += 1
                    if result.is_error:
                        errors += 1
                        failures.append(result.content[0].text[:200])
        except Exception as exc:  # a failed session: every call it did not make counts as an error
            errors += CALLS_PER_SESSION - made
            failures.append(f"session {n}: {exc.__class__.__name__}: {exc}"[:300])

    started = time.perf_counter()
    with anyio.move_on_after(budget) as limit:  # a machine too busy to finish in time: say so, don't hang
        async with anyio.create_task_group() as tasks:
            for n in range(CONCURRENT_SESSIONS):
                tasks.start_soon(one_session, n)
    wall = time.perf_counter() - started
    result = {"sessions": CONCURRENT_SESSIONS, "callsPerSession": CALLS_PER_SESSION,
              "calls": CONCURRENT_SESSIONS * CALLS_PER_SESSION, "completed": len(samples), "errors": errors,
              "timedOut": limit.cancelled_caught,
              "wallSeconds": round(wall, 2), "callsPerSecond": round(len(samples) / wall, 1),
              "latencyMs": summary_ms(samples) if samples else None}
    if failures:
        result["firstFailures"] = failures[:5]
    return result


async def idle_session_memory(server, url, headers):
    """RSS growth of the server process per idle (initialized) SSE session."""
    opened, release = anyio.Event(), anyio.Event()
    count = [0]

    async def hold():
        async with session(url, "sse", headers):
            count[0] += 1
            if count[0] == IDLE_SESSIONS:
                opened.set()
            await release.wait()

    await anyio.sleep(0.5)
    before = server.rss_kib()
    async with anyio.create_task_group() as tasks:
        for _ in range(IDLE_SESSIONS):
            tasks.start_soon(hold)
        with anyio.fail_after(60):
            await opened.wait()
        await anyio.sleep(1.5)  # let the server settle
        after = server.rss_kib()
        release.set()
    return {"sessions": IDLE_SESSIONS, "rssBeforeKiB": before, "rssAfterKiB": after,
            "kibPerSession": round((after - before) / IDLE_SESSIONS, 1)}


# -- the run -----------------------------------------------------------------------------------

def start_answering_peer(workdir, answer, tool_list, floor):
    """The peer listing ours' tools (`tool_list`) and answering list_integrations with ours' answer,
    started once the integrations exist: with `floor`, the design floor (the database work the design
    keeps, bench.support.DesignFloor, on ours' database; on ours' server), else the same-answer peer
    (no database; on daphne as the peer)."""
    env = peer_env(BENCH_PEER_TOOLS=json.dumps({"list_integrations": answer, "get_integration": {}}), BENCH_PEER_TOOL_LIST=tool_list,
                   **({"BENCH_PEER_DATABASE": workdir / "bench.sqlite3"} if floor else {}))
    if floor:
        return Child.backflow_daphne("bench.support:peer_app", env, workdir / "peer-floor.log")
    return Child.daphne("bench.support:peer_app", env, workdir / "peer-same-answer.log")


async def measure(ours, ours_uvicorn, peer, peer_uvicorn, key, deadline, workdir, servers):
    headers = {"Authorization": f"Bearer {key}"}
    our_urls = {"sse": f"{ours.url}/mcp/sse", "http": f"{ours.url}/mcp"}
    uvicorn_urls = {"sse": f"{ours_uvicorn.url}/mcp/sse", "http": f"{ours_uvicorn.url}/mcp"}
    peer_urls = {"sse": f"{peer.url}/sse", "http": f"{peer.url}/mcp"}
    peer_uvicorn_urls = {"sse": f"{peer_uvicorn.url}/sse", "http": f"{peer_uvicorn.url}/mcp"}

    async with session(our_urls["http"], "http", headers) as s:
        for n in range(INTEGRATIONS):
            result = await s.call_tool("create_integration", {
                "name": f"bench-{n}", "baseUrl": f"https://api{n}.example.com/v1",
                "auth": {"type": "bearer", "secret": f"token_{n}"},
                "endpoints": [{"name": "list", "method": "get", "path": "/items"}, {"name": "get", "method": "get", "path": "/items/{id}"}]})
            assert not result.is_error, result.content[0].text
        answer = (await s.call_tool("list_integrations", {})).structured_content
        tool_list = write_tool_list(await s.list_tools(), workdir / "ours-tools.json")
    floor = start_answering_peer(workdir, answer, tool_list, floor=True)
    servers.append(floor)
    floor_urls = {"sse": f"{floor.url}/sse", "http": f"{floor.url}/mcp"}
    same = start_answering_peer(workdir, answer, tool_list, floor=False)
    servers.append(same)
    same_urls = {"sse": f"{same.url}/sse", "http": f"{same.url}/mcp"}

    latency = {}
    for transport in ("sse", "http"):
        timed = await sequential_latency({
            "ours": (our_urls[transport], transport, headers, "list_integrations", {}),
            "ours-uvicorn": (uvicorn_urls[transport], transport, headers, "list_integrations", {}),
            "peer": (peer_urls[transport], transport, {}, "echo", {"text": "hi"}),
            "peer-uvicorn": (peer_uvicorn_urls[transport], transport, {}, "echo", {"text": "hi"}),
            "peer-floor": (floor_urls[transport], transport, {}, "list_integrations", {}),
            "peer-same-answer": (same_urls[transport], transport, {}, "list_integrations", {})})
        for name, summary in timed.items():
            latency[f"{name}/{transport}"] = summary

    memory = {"ours": await idle_session_memory(ours, our_urls["sse"], headers),
              "peer": await idle_session_memory(peer, peer_urls["sse"], {})}
    load = await concurrent_load(our_urls["sse"], headers, "list_integrations", {}, max(10.0, deadline - time.monotonic()))
    return latency, memory, load


def ratio(a, b):
    return round(a / b, 2) if b else None


def report(latency, memory, load):
    """Print the table; return the ratios ours/peer (flat keys ending in Ratio, as `python -m bench` collects them)."""
    ratios = {}
    lines = ["", "tools/call latency, sequential on one session (ms)",
             f"{'':20}{'p50':>9}{'p95':>9}{'max':>9}{'errors':>8}"]
    for name, row in latency.items():
        lines.append(f"{name:20}{row['p50']:9.2f}{row['p95']:9.2f}{row['max']:9.2f}{row['errors']:8d}")
    for transport in ("sse", "http"):
        for name, peer_name, suffix in (("ours", "peer", ""), ("ours-uvicorn", "peer", "Uvicorn"),
                                        ("ours-uvicorn", "peer-uvicorn", "UvicornVsPeerOnUvicorn"),
                                        ("peer-floor", "peer", "DesignFloorVsPeer"), ("ours", "peer-floor", "VsDesignFloor"),
                                        ("peer-same-answer", "peer", "SameAnswerVsPeer"), ("ours", "peer-same-answer", "VsSameAnswer")):
            ours, peer = latency[f"{name}/{transport}"], latency[f"{peer_name}/{transport}"]
            for p in ("p50", "p95"):
                ratios[f"{transport}{p.upper()}Ratio{suffix}"] = ratio(ours[p], peer[p])
            lines.append(f"{name}/{peer_name} {transport:4}  p50 x{ratios[f'{transport}P50Ratio{suffix}']}  "
                         f"p95 x{ratios[f'{transport}P95Ratio{suffix}']}")
    ratios["memoryPerIdleSessionRatio"] = ratio(memory["ours"]["kibPerSession"], memory["peer"]["kibPerSession"])
    ratios["loadZeroErrorsOk"] = load["errors"] == 0 and not load["timedOut"]
    lines += ["", f"memory per idle SSE session ({IDLE_SESSIONS} sessions, server RSS growth)"]
    for name, row in memory.items():
        lines.append(f"{name:6} {row['kibPerSession']:8.1f} KiB/session  (RSS {row['rssBeforeKiB']} -> {row['rssAfterKiB']} KiB)")
    lines.append(f"ours/peer x{ratios['memoryPerIdleSessionRatio']}")
    lat = load["latencyMs"] or {}
    lines += ["", f"load on ours: {load['sessions']} concurrent SSE sessions x {load['callsPerSession']} calls",
              f"completed {load['completed']}/{load['calls']}  errors {load['errors']}  wall {load['wallSeconds']} s  "
              f"{load['callsPerSecond']} calls/s  p50 {lat.get('p50')} ms  p95 {lat.get('p95')} ms  max {lat.get('max')} ms"]
    if load["timedOut"]:
        lines.append(f"  TIMED OUT: {load['calls'] - load['completed']} calls not made within the time budget (machine busy?)")
    for failure in load.get("firstFailures", []):
        lines.append(f"  failure: {failure}")
    print("\n".join(lines))
    return ratios


def main():
    started = time.monotonic()
    deadline = started + TIME_LIMIT
    workdir = Path(tempfile.mkdtemp(prefix="backflow-bench-"))
    servers = []
    try:
        env = platform_env(f"sqlite:///{workdir / 'bench.sqlite3'}")
        key = create_platform(env)
        ours = Child.backflow_daphne("backflow.asgi:application", env, workdir / "ours.log")
        servers.append(ours)
        ours_uvicorn = Child.backflow_uvicorn(env, workdir / "ours-uvicorn.log")
        servers.append(ours_uvicorn)
        peer = Child.daphne("bench.support:peer_app", peer_env(), workdir / "peer.log")
        servers.append(peer)
        peer_uvicorn = Child.peer_uvicorn("bench.support:peer_app", peer_env(), workdir / "peer-uvicorn.log")
        servers.append(peer_uvicorn)

        async def limited():
            with anyio.fail_after(max(30.0, deadline - time.monotonic()) + 30):  # the load phase stops itself at the deadline
                return await measure(ours, ours_uvicorn, peer, peer_uvicorn, key, deadline, workdir, servers)

        latency, memory, load = anyio.run(limited)
        ratios = report(latency, memory, load)
        result = {"latencyMs": latency, "memory": memory, "load": load, "oursOverPeer": ratios,
                  "seconds": round(time.monotonic() - started, 1)}
        print(f"\n(total {result['seconds']} s)")
        return result
    finally:
        stop_all(servers)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    outcome = main()
    sys.exit(0 if outcome["oursOverPeer"]["loadZeroErrorsOk"] else 1)
