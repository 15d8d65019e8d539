"""Load: tenant route invocations (/t/<tenant>/<path>) at 50 concurrent clients, against the
upstream they chain called directly at the same concurrency.

    .venv/bin/python -m bench.load_routes [--clients 50] [--seconds 10] [--rounds 2]   # about 1 min

Loopback only: a local upstream (uvicorn serving bench.support.upstream_app, a fixed 200-byte
JSON answer), and daphne (`make run`'s server) on a temporary SQLite file with a tenant, an API
key, an integration for the upstream and the route GET /items (requireAuth: true, one action that
calls the upstream's GET /items). The tenant's route rate limit is lifted for the run.

- ours: GET /t/bench/items with the API key: authentication, the rate-limit count, the upstream
  call through the shared egress client, the answer, and the invocation record written after it;
- peer: GET <upstream>/items directly.
Each client keeps one connection open (bench.support.KeepAliveClient, a light asyncio client, so
the load generator in this process takes little of the 2 CPUs) and sends its next request when
the answer arrives. Direct and routed loads alternate for `--rounds` rounds of `--seconds` each
(after a 1 s warm-up); the samples of all rounds are pooled. Measured: errors (anything but 200;
target zero), latency p50/p95/p99, throughput, and the RSS of daphne (ours) and of the upstream
(what the peer's load touches) before, at the peak and after. Ratios are ours/peer.
"""

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.support import (
    Child, Memory, create_platform, http_load, latency_ms, mib, peer_env, platform_env, print_rows, row, stop_all,
)


def set_up(workdir, extra_env, apps=("backflow.asgi:application",)):
    """The upstream, then one daphne per ASGI app in `apps` on the same database: (upstream, the
    first daphne, auth headers, every child); the other daphnes are children[2:]."""
    import httpx

    env = platform_env(f"sqlite:///{workdir / 'bench.sqlite3'}", BACKFLOW_EGRESS_ALLOW="127.0.0.1", **extra_env)
    children = []
    try:
        children.append(Child.uvicorn("bench.support:upstream_app", peer_env(), workdir / "upstream.log"))
        key = create_platform(env)
        for index, app in enumerate(apps):
            children.append(Child.daphne(app, env, workdir / f"daphne-{index}.log"))
        upstream, daphne = children[:2]
        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=daphne.url, headers=auth, timeout=30) as api:
            api.post("/api/integrations/", json={
                "name": "catalog", "baseUrl": upstream.url, "auth": {"type": "none"},
                "endpoints": [{"name": "listItems", "method": "get", "path": "/items"}]}).raise_for_status()
            api.post("/api/routes/", json={
                "path": "/items", "method": "get", "requireAuth": True,
                "integrations": {"actions": [{"id": "items", "integration": "catalog", "action": "listItems"}]},
            }).raise_for_status()
            check = httpx.get(f"{daphne.url}/t/bench/items", headers=auth, timeout=30)
            assert check.status_code == 200 and check.json() == httpx.get(f"{upstream.url}/items").json(), check.text
        return upstream, daphne, auth, children
    except BaseException:
        stop_all(children)
        raise


def pooled(runs):
    """One result of several rounds: samples' percentiles cannot be pooled, so the rounds keep theirs
    in `rounds` and the top level has the totals, the throughput over all rounds and the worst tails."""
    requests = sum(r["requests"] for r in runs)
    seconds = sum(r["seconds"] for r in runs)
    errors = sum(r["errors"] for r in runs)
    return {"requests": requests, "errors": errors, "seconds": round(seconds, 2), "perSecond": round((requests - errors) / seconds, 1),
            "latencyMs": runs[0]["latencyMs"] if len(runs) == 1 else None, "rounds": runs,
            "firstFailures": [f for r in runs for f in r.get("firstFailures", [])][:5]}


async def measure(targets, clients, seconds, rounds):
    """Alternate the targets for `rounds` rounds; every latency sample of a target kept."""
    samples = {name: [] for name in targets}
    runs = {name: [] for name in targets}
    for _ in range(rounds):
        for name, (url, headers, memories) in targets.items():
            result = await http_load(url, headers, clients, seconds, memories=memories, keep_samples=samples[name])
            runs[name].append(result)
    out = {}
    for name in targets:
        out[name] = pooled(runs[name])
        out[name]["latencyMs"] = latency_ms(samples[name])
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each round of each target")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra environment of ours (e.g. CONN_MAX_AGE=60)")
    args = parser.parse_args(argv)
    extra_env = dict(item.split("=", 1) for item in args.env)

    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="backflow-bench-load-routes-"))
    children = []
    try:
        upstream, daphne, auth, children = set_up(workdir, extra_env)
        memory = {"ours": Memory(daphne), "peer": Memory(upstream)}
        targets = {"peer": (f"{upstream.url}/items", {}, [memory["peer"]]),
                   "ours": (f"{daphne.url}/t/bench/items", auth, [memory["ours"]])}
        time.sleep(0.5)
        results = asyncio.run(measure(targets, args.clients, args.seconds, args.rounds))
        for name in ("ours", "peer"):
            memory[name].settle(1.5)
            results[name]["memory"] = memory[name].report()
        if not daphne.alive():
            results["ours"]["serverDied"] = daphne.output(1500)
    finally:
        stop_all(children)
        shutil.rmtree(workdir, ignore_errors=True)

    ours, peer = results["ours"], results["peer"]
    rows = [row("errors", ours["errors"], peer["errors"], ratio_of=False, target="0", met=ours["errors"] == 0)]
    for p in ("p50", "p95", "p99"):
        rows.append(row(f"latency {p} ms", ours["latencyMs"][p], peer["latencyMs"][p]))
    rows.append(row("requests/s", ours["perSecond"], peer["perSecond"]))
    cpu = {name: round(r["memory"]["cpuSeconds"] * 1000 / max(1, r["requests"]), 3) for name, r in results.items()}
    rows.append(row("server CPU ms per request", cpu["ours"], cpu["peer"]))
    rows.append(row("RSS before/peak/after MiB", mib(ours["memory"]), mib(peer["memory"]), ratio_of=False))
    about = (f"{args.clients} keep-alive clients, {args.rounds} x {args.seconds:g} s per target alternating; ours: daphne, "
             "SQLite (temp file), GET /t/bench/items (API key, 1 action -> local upstream, invocation recorded); "
             "peer: the upstream (uvicorn) called directly; RSS: daphne vs the upstream"
             + (f"; ours with {' '.join(args.env)}" if args.env else ""))
    outcome = {"about": about, "rows": rows, "targets": results, "seconds": round(time.monotonic() - started, 1),
               "zeroErrorsMet": ours["errors"] == 0}
    print_rows(rows)
    for failure in ours.get("firstFailures", []):
        print(f"  ours failure: {failure}")
    return outcome


if __name__ == "__main__":
    sys.exit(0 if main()["zeroErrorsMet"] else 1)
