"""Workflows and the MCP client: the cost of an MCP call through a kept connection, and the engine's
own cost per step.

    .venv/bin/python bench/workflows.py [--calls 300] [--spawns 10] [--steps 50] [--runs 5] [--postgres URL] [--json]

Everything runs in this process against server-everything over stdio (Node 22 from tests/peers),
on a throw-away database: SQLite in a temporary folder, or with --postgres a database created for
the run on that server (migrated here, dropped at the end; nothing else is touched).

1. MCP `echo` call latency, three ways, interleaved in rounds so all see the same machine load:
   - `direct_sdk`: the MCP SDK's ClientSession on one open stdio session, awaited in its own event
     loop: the floor for any client of this SDK (the baseline);
   - `kept_connection`: workflows_app.mcp_client.call_tool (what mcp.execute / mcp_tool steps and
     /agent/mcp/execute use): sync caller, the call hops to the process-wide background loop and
     reuses the connection opened by the first call;
   - `spawn_per_call`: a naive client that starts the server, initializes a fresh session, calls
     once and stops it, every time.
   Target: kept_connection p50 within 1.5x of direct_sdk p50.
2. Engine overhead per step: a workflow of N `mcp.execute echo` steps executed by
   engine.execute (what a worker runs), `--runs` times. Every MCP call the engine makes is timed
   where it happens (mcp_client.call_tool is wrapped by a timer for these runs; the real call
   still happens); the run's wall time minus those calls, divided by N, is what the engine adds per
   step: rendering params, the server lookup, the step record (insert + update, each a commit),
   the cancel check, redaction, result conversion and the run's own claim/finish. (Subtracting the
   tight-loop call p50 instead would count as engine cost the slower wake-ups of a call that comes
   after database work; that figure is printed too.) Target: <= 1 ms per step.
   The database decides much of it: each commit of SQLite in WAL mode with Django's default
   synchronous=FULL waits for an fsync (`--sqlite-synchronous NORMAL` shows the cost without that
   wait). `--postgres URL` runs the same on a fresh database created (and dropped) on that server.
`main()` returns the numbers as a dict and prints a table. Not part of `make test`.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "tests" / "peers" / "node_modules"
NODE = PEERS / "node" / "bin" / "node"
EVERYTHING = PEERS / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
KEPT_RATIO_TARGET = 1.5
OVERHEAD_TARGET_MS = 1.0


def percentile(samples, fraction):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def summary_ms(samples):
    return {"p50_ms": round(statistics.median(samples) * 1000, 3), "p95_ms": round(percentile(samples, 0.95) * 1000, 3),
            "n": len(samples)}


def throwaway_database(postgres, workdir):
    """(DATABASE_URL, drop) of a new, empty database: a SQLite file in `workdir` or one on `postgres`."""
    if not postgres:
        return f"sqlite:///{workdir / 'bench.sqlite3'}", lambda: None
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    parts = urlsplit(postgres)
    admin_url = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    name = f"backflow_bench_workflows_{os.getpid()}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')

    def drop():
        from django.db import connections

        connections.close_all()
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return urlunsplit(parts._replace(path=f"/{name}")), drop


def django_ready():
    django = sys.modules.get("django")
    return bool(django and getattr(django, "apps", None) and django.apps.apps.ready)


def set_up_django(database_url):
    """Django set up on `database_url` (embedded defaults otherwise), migrated."""
    sys.path.insert(0, str(ROOT))
    os.environ["DJANGO_SETTINGS_MODULE"] = "backflow.settings"
    os.environ["DATABASE_URL"] = database_url
    for name in ("REDIS_URL", "DEBUG"):
        os.environ.pop(name, None)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def database_label():
    from django.db import connection

    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            mode = cursor.execute("PRAGMA synchronous").fetchone()[0]
            journal = cursor.execute("PRAGMA journal_mode").fetchone()[0]
        return f"sqlite ({journal}, synchronous={ {0: 'OFF', 1: 'NORMAL', 2: 'FULL', 3: 'EXTRA'}.get(mode, mode) })"
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return f"{connection.vendor} (synchronous_commit={cursor.fetchone()[0]})"


class CallTimer:
    """Times every mcp_client.call_tool made while active (the engine calls it through the module)."""

    def __init__(self):
        from workflows_app import mcp_client

        self.module, self.original, self.spent = mcp_client, mcp_client.call_tool, []

    def __enter__(self):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return self.original(*args, **kwargs)
            finally:
                self.spent.append(time.perf_counter() - started)

        self.module.call_tool = timed
        return self

    def __exit__(self, *exc):
        self.module.call_tool = self.original


class DirectSession:
    """One SDK session in a private event loop thread (the baseline client)."""

    def __init__(self, errlog):
        import asyncio
        import threading

        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self._errlog = errlog
        self._stop = None
        self.session = self.run(self._open())

    def run(self, coroutine):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)

    async def _open(self):
        import asyncio

        from mcp import ClientSession, StdioServerParameters, stdio_client

        ready, self._stop = asyncio.Event(), asyncio.Event()
        holder = {}

        async def hold():
            params = StdioServerParameters(command=str(NODE), args=[str(EVERYTHING)])
            async with stdio_client(params, errlog=self._errlog) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                holder["session"] = session
                ready.set()
                await self._stop.wait()

        self._task = asyncio.get_running_loop().create_task(hold())
        await ready.wait()
        return holder["session"]

    async def _timed_calls(self, count, offset):
        samples = []
        for i in range(count):
            started = time.perf_counter()
            result = await self.session.call_tool("echo", {"message": f"direct {offset + i}"})
            samples.append(time.perf_counter() - started)
            assert not result.is_error, result
        return samples

    def calls(self, count, offset=0):
        return self.run(self._timed_calls(count, offset))

    def close(self):
        async def stop():
            self._stop.set()
            await self._task

        self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)


def spawn_per_call(count, errlog):
    """A fresh server process and session for every call (what not keeping connections costs)."""
    import anyio
    from mcp import ClientSession, StdioServerParameters, stdio_client

    async def once(i):
        started = time.perf_counter()
        params = StdioServerParameters(command=str(NODE), args=[str(EVERYTHING)])
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            result = await session.call_tool("echo", {"message": f"spawned {i}"})
        assert not result.is_error, result
        return time.perf_counter() - started

    async def all_calls():
        return [await once(i) for i in range(count)]

    return anyio.run(all_calls)


def measure(*, calls, spawns, steps, runs, rounds, errlog):
    from tenants import services as tenant_services
    from tenants.principals import Principal
    from workflows_app import engine, mcp_client, selectors, services

    tenant = tenant_services.tenant_create(slug="bench", name="Bench")
    actor = Principal.system(tenant, "bench")
    server = services.mcp_server_create(tenant=tenant, actor=actor, allow_stdio=True, document={
        "name": "everything", "command": str(NODE), "args": [str(EVERYTHING)]})
    spec = selectors.mcp_server_spec(server)
    document = {"id": "noop-chain", "name": "No-op chain", "workflows": [{"name": "main", "steps": [
        {"id": f"s{i}", "action": "mcp.execute", "params": {"server": "everything", "tool": "echo", "arguments": {"message": f"step {i}"}}}
        for i in range(steps)]}]}
    workflow = services.workflow_create(tenant=tenant, actor=actor, document=document)

    direct = DirectSession(errlog)
    direct_samples, kept_samples, run_walls, run_calls, step_durations = [], [], [], [], []
    try:
        warm = max(10, calls // 10)
        direct.calls(warm)
        for i in range(warm):
            mcp_client.call_tool(spec, "echo", {"message": f"warm {i}"})
        # One untimed run first: the first StepRun inserts and query plans.
        engine.execute(services.run_create(tenant=tenant, actor=actor, workflow=workflow).id)
        per_round = max(1, calls // rounds)
        runs_per_round = [runs // rounds + (1 if r < runs % rounds else 0) for r in range(rounds)]
        for r in range(rounds):
            direct_samples += direct.calls(per_round, r * per_round)
            for i in range(per_round):
                started = time.perf_counter()
                result = mcp_client.call_tool(spec, "echo", {"message": f"kept {r * per_round + i}"})
                kept_samples.append(time.perf_counter() - started)
                assert not result.is_error, result
            for _ in range(runs_per_round[r]):
                run = services.run_create(tenant=tenant, actor=actor, workflow=workflow)
                with CallTimer() as timer:
                    started = time.perf_counter()
                    status = engine.execute(run.id)
                    run_walls.append(time.perf_counter() - started)
                assert status == "succeeded", run.error
                assert len(timer.spent) == steps, timer.spent
                run_calls.append(sum(timer.spent))
                step_durations += [s.duration_ms / 1000 for s in selectors.run_steps(run=run)]
        spawn_samples = spawn_per_call(spawns, errlog)
    finally:
        direct.close()
        mcp_client.CLIENT.run(mcp_client.CLIENT.manager.close_all(), 30)

    results = {
        "database": database_label(),
        "calls": len(kept_samples), "spawns": spawns, "steps": steps, "runs": len(run_walls),
        "direct_sdk": summary_ms(direct_samples),
        "kept_connection": summary_ms(kept_samples),
        "spawn_per_call": summary_ms(spawn_samples),
    }
    call_ms = results["kept_connection"]["p50_ms"]
    per_step_ms = [wall * 1000 / steps for wall in run_walls]
    overhead_ms = [(wall - calls_s) * 1000 / steps for wall, calls_s in zip(run_walls, run_calls)]
    results["engine"] = {
        "run_wall_ms": [round(wall * 1000, 1) for wall in run_walls],
        "per_step_ms_median": round(statistics.median(per_step_ms), 3),
        "in_run_call_ms_mean": round(sum(run_calls) * 1000 / (steps * len(run_calls)), 3),
        "step_record_duration_ms_median": round(statistics.median(step_durations) * 1000, 3),
        "kept_call_p50_ms": call_ms,
        "overhead_per_step_ms": round(statistics.median(overhead_ms), 3),
        "overhead_per_step_ms_runs": [round(o, 3) for o in overhead_ms],
        "per_step_minus_tight_loop_call_ms": round(statistics.median(per_step_ms) - call_ms, 3),
    }
    results["ratios"] = {
        "kept_vs_direct_p50": round(call_ms / results["direct_sdk"]["p50_ms"], 2),
        "spawn_vs_kept_p50": round(results["spawn_per_call"]["p50_ms"] / call_ms, 1),
    }
    results["targets"] = {
        "kept_within_1_5x_direct": results["ratios"]["kept_vs_direct_p50"] <= KEPT_RATIO_TARGET,
        "engine_overhead_le_1_ms_per_step": results["engine"]["overhead_per_step_ms"] <= OVERHEAD_TARGET_MS,
    }
    return results


def report(results):
    lines = [f"workflows benchmark: server-everything echo over stdio; {results['calls']} calls each (kept, direct), "
             f"{results['spawns']} spawned; {results['runs']} runs of {results['steps']} steps on {results['database']}"]
    lines.append(f"  {'client':<34} {'p50 ms':>10} {'p95 ms':>10}")
    for label, name in (("direct SDK session (baseline)", "direct_sdk"), ("kept connection (mcp_client)", "kept_connection"),
                        ("server spawned per call (naive)", "spawn_per_call")):
        r = results[name]
        lines.append(f"  {label:<34} {r['p50_ms']:>10.3f} {r['p95_ms']:>10.3f}")
    ratios, targets, e = results["ratios"], results["targets"], results["engine"]
    lines.append(f"  kept / direct p50: {ratios['kept_vs_direct_p50']:.2f}x "
                 f"(target <= {KEPT_RATIO_TARGET}x: {'met' if targets['kept_within_1_5x_direct'] else 'MISSED'}); "
                 f"spawn per call / kept: {ratios['spawn_vs_kept_p50']:.0f}x")
    lines.append(f"  engine: {e['per_step_ms_median']:.3f} ms per step (median run), of which the MCP call {e['in_run_call_ms_mean']:.3f} ms "
                 f"(timed in the run) -> overhead {e['overhead_per_step_ms']:.3f} ms per step "
                 f"(target <= {OVERHEAD_TARGET_MS} ms: {'met' if targets['engine_overhead_le_1_ms_per_step'] else 'MISSED'})")
    lines.append(f"          per run: {', '.join(f'{o:.3f}' for o in e['overhead_per_step_ms_runs'])} ms; per step minus the "
                 f"tight-loop call p50: {e['per_step_minus_tight_loop_call_ms']:.3f} ms")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="timed echo calls per client (kept, direct)")
    parser.add_argument("--spawns", type=int, default=10, help="calls of the spawn-per-call client")
    parser.add_argument("--steps", type=int, default=50, help="steps of the no-op workflow")
    parser.add_argument("--runs", type=int, default=5, help="timed runs of that workflow")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds the calls and runs are split into")
    parser.add_argument("--sqlite-synchronous", choices=["OFF", "NORMAL", "FULL"],
                        help="SQLite only: this PRAGMA for the run (Django's default in WAL mode is FULL: an fsync per commit)")
    parser.add_argument("--postgres", metavar="URL", help="a Postgres server URL: run on a fresh database created there (and dropped)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if django_ready():
        # Django is already set up on another database in this process (a bench runner): measure in
        # a fresh interpreter, which sets up its own throw-away database.
        child_args = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--json"]
        done = subprocess.run([sys.executable, __file__, *child_args, "--json"], cwd=ROOT, capture_output=True, text=True,
                              timeout=600, check=True)
        results = json.loads(done.stdout[done.stdout.index("{"):])
        print(json.dumps(results, indent=2) if args.json else report(results))
        return results
    if not (NODE.exists() and EVERYTHING.exists()):
        raise SystemExit("tests/peers/node_modules is missing: install the peers (see tests/peers/README.md).")
    with tempfile.TemporaryDirectory(prefix="backflow-bench-workflows-") as tmp, open(Path(tmp) / "stderr.log", "w") as errlog:
        database_url, drop = throwaway_database(args.postgres, Path(tmp))
        try:
            set_up_django(database_url)
            if args.sqlite_synchronous and not args.postgres:
                from django.db import connection

                with connection.cursor() as cursor:
                    cursor.execute(f"PRAGMA synchronous={args.sqlite_synchronous}")
            results = measure(calls=args.calls, spawns=args.spawns, steps=args.steps, runs=args.runs, rounds=args.rounds,
                              errlog=errlog)
        finally:
            drop()
    print(json.dumps(results, indent=2) if args.json else report(results))
    return results


if __name__ == "__main__":
    main()
