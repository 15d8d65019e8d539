"""What instrumentation costs the hot path: tenant routes with and without backflow.front (request
ids, per-door counters and latency histograms), and the counters the route runtime itself bumps.

    .venv/bin/python -m bench.instrumentation [--clients 50] [--seconds 8] [--rounds 3]   # about 1 min

Two daphne processes on one SQLite file, set up as bench.load_routes sets up its own (a tenant, an
API key, GET /items chaining one call to a local uvicorn upstream):
- ours: `backflow.asgi:application`, what `make run` serves;
- peer: `bench.unobserved:application`, the same application without backflow.front.
Loads alternate for `--rounds` rounds. Measured: requests/s and server CPU per request of each
(ratios ours/peer; the target: at most a few percent, 1.05). Beside it, in this process, the time of
what the runtime counts on every routed call (a route invocation, an upstream call, each with its
histogram) and on every tool call, as a share of ours' CPU per request. Both servers count those.
"""

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import timeit
from pathlib import Path

from bench.load_routes import measure, set_up
from bench.support import Memory, print_rows, row, stop_all

TARGET = 1.05


def counters_microseconds(repeat=20000):
    """Microseconds per routed call (and per tool call) of the runtime's own counting."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backflow.settings")
    django.setup()
    from backflow import metrics

    def routed():
        metrics.route_invocation(200, 0.012, "bench")
        metrics.upstream_calls.labels("ok").inc()
        metrics.upstream_duration.observe(0.01)

    def tool():
        metrics.tool_call("list_integrations", "ok", "bench")

    return ({"routed": round(min(timeit.repeat(routed, number=repeat, repeat=3)) / repeat * 1e6, 2),
             "tool": round(min(timeit.repeat(tool, number=repeat, repeat=3)) / repeat * 1e6, 2)})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="backflow-bench-instrumentation-"))
    children = []
    try:
        _, daphne, auth, children = set_up(workdir, {}, apps=("backflow.asgi:application", "bench.unobserved:application"))
        bare = children[2]
        memory = {"ours": Memory(daphne), "peer": Memory(bare)}
        targets = {"ours": (f"{daphne.url}/t/bench/items", auth, [memory["ours"]]),
                   "peer": (f"{bare.url}/t/bench/items", auth, [memory["peer"]])}
        time.sleep(0.5)
        results = asyncio.run(measure(targets, args.clients, args.seconds, args.rounds))
        for name in targets:
            memory[name].settle(1.0)
            results[name]["memory"] = memory[name].report()
    finally:
        stop_all(children)
        shutil.rmtree(workdir, ignore_errors=True)

    ours, peer = results["ours"], results["peer"]
    cpu = {name: round(r["memory"]["cpuSeconds"] * 1000 / max(1, r["requests"]), 3) for name, r in results.items()}
    counting = counters_microseconds()
    share = round(counting["routed"] / (cpu["ours"] * 1000) * 100, 2)
    rows = [
        row("errors", ours["errors"], peer["errors"], ratio_of=False, target="0", met=ours["errors"] == peer["errors"] == 0),
        row("requests/s", ours["perSecond"], peer["perSecond"]),
        row("server CPU ms per request", cpu["ours"], cpu["peer"], target=f"<= {TARGET}x",
            met=cpu["ours"] <= cpu["peer"] * TARGET),
        row("latency p50 ms", ours["latencyMs"]["p50"], peer["latencyMs"]["p50"]),
        row("runtime counters us/route call", counting["routed"], ratio_of=False),
        row("  share of CPU per request %", share, ratio_of=False),
        row("counters us/tool call", counting["tool"], ratio_of=False),
    ]
    print_rows(rows)
    return {"about": (f"{args.clients} keep-alive clients, {args.rounds} x {args.seconds:g} s alternating; GET /t/bench/items "
                      "(API key, 1 action -> local upstream) on two daphnes, one database: ours with backflow.front "
                      "(request ids, per-door metrics), peer without; counters timed in-process"),
            "rows": rows, "targets": results, "counters": counting, "seconds": round(time.monotonic() - started, 1)}


if __name__ == "__main__":
    sys.exit(0 if main()["rows"][0]["met"] else 1)
