"""Tenant routes (/t/<tenant>/<path>) on daphne against the upstream they call, in the same run.

    .venv/bin/python bench/routes.py [--seconds 3] [--rounds 2]

Sets up a throw-away platform on loopback only: a temporary SQLite database (migrate,
create_tenant, create_api_key), one daphne (`make run`'s server, embedded defaults: no Redis), and
a local upstream (uvicorn serving a tiny JSON ASGI app). Through the REST API it creates an
integration for that upstream and two one-action routes: `/items` (requireAuth false) and
`/items-auth` (requireAuth true, called with the tenant's API key).

It then measures, with the same httpx client code for all targets (one keep-alive connection per
simulated client), at 1 and at 50 concurrent clients: p50/p95 latency and throughput of calling the
upstream directly, and of calling each route; targets are interleaved and each is measured in
`--rounds` rounds of `--seconds`, keeping its best round (other load on the machine only hurts).
Printed: a table, and for each route the added p50 (route p50 - direct p50) and the throughput
ratio (route / direct). Targets: added p50 <= 2 ms at 1 client; throughput >= 50% of direct.
`main()` returns the numbers as a dict. Not part of `make test`.
"""

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

if not __package__:  # run as a script (python bench/routes.py): the project root on the path for `bench.support`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.support import ROOT, Child, create_platform, peer_env, percentile, platform_env, stop_all

ADDED_P50_TARGET_MS = 2.0
THROUGHPUT_RATIO_TARGET = 0.5


async def measure(url, headers, concurrency, seconds, max_requests):
    """Latencies (s) and throughput (requests/s) of GETs from `concurrency` workers, each with its own
    keep-alive connection, for `seconds` (or until `max_requests`) after a warm-up."""
    import httpx

    clients = [httpx.AsyncClient(limits=httpx.Limits(max_connections=1), timeout=30, headers=headers) for _ in range(concurrency)]
    try:
        async def warm(client):
            for _ in range(max(3, 50 // concurrency)):
                (await client.get(url)).raise_for_status()

        await asyncio.gather(*(warm(client) for client in clients))
        latencies = []
        deadline = time.perf_counter() + seconds

        async def worker(client):
            while time.perf_counter() < deadline and len(latencies) < max_requests:
                started = time.perf_counter()
                response = await client.get(url)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:300]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for client in clients))
        elapsed = time.perf_counter() - started
    finally:
        for client in clients:
            await client.aclose()
    return {"p50_ms": round(statistics.median(latencies) * 1000, 3), "p95_ms": round(percentile(latencies, 0.95) * 1000, 3),
            "rps": round(len(latencies) / elapsed, 1), "requests": len(latencies)}


def better(a, b):
    """Of two rounds, the one with more throughput (the machine may be busy with other work)."""
    return a if b is None or a["rps"] >= b["rps"] else b


def set_up(workdir):
    """Start the upstream and daphne, create tenant, key, integration and routes. Returns (urls, children)."""
    import httpx

    env = platform_env(f"sqlite:///{workdir / 'bench.sqlite3'}", BACKFLOW_EGRESS_ALLOW="127.0.0.1")
    children = [Child.uvicorn("bench.support:upstream_app", peer_env(), workdir / "upstream.log")]
    try:
        key = create_platform(env)
        children.append(Child.backflow_daphne("backflow.asgi:application", env, workdir / "daphne.log"))
        upstream, platform = children[0].url, children[1].url
        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=platform, headers=auth, timeout=30) as api:
            created = api.post("/api/integrations/", json={
                "name": "catalog", "baseUrl": upstream, "auth": {"type": "none"},
                "endpoints": [{"name": "listItems", "method": "get", "path": "/items"}]})
            created.raise_for_status()
            for path, require_auth in (("/items", False), ("/items-auth", True)):
                api.post("/api/routes/", json={
                    "path": path, "method": "get", "requireAuth": require_auth,
                    "integrations": {"actions": [{"id": "items", "integration": "catalog", "action": "listItems"}]},
                }).raise_for_status()
        urls = {"direct": (f"{upstream}/items", {}), "route": (f"{platform}/t/bench/items", {}),
                "route+auth": (f"{platform}/t/bench/items-auth", auth)}
        return urls, children
    except BaseException:
        stop_all(children)
        raise


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.5, help="length of each measurement")
    parser.add_argument("--budget", type=float, default=100.0, help="no further round starts after this many seconds")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per target (the best is kept)")
    parser.add_argument("--max-requests", type=int, default=20000, help="cap per measurement")
    parser.add_argument("--db-dir", default=None, help="folder of the temporary SQLite database (e.g. /dev/shm)")
    args = parser.parse_args(argv)

    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="backflow-bench-routes-", dir=args.db_dir) as tmp:
        urls, processes = set_up(Path(tmp))
        set_up_s = time.monotonic() - began
        try:
            results, rounds = {}, 0
            for _ in range(args.rounds):  # targets interleaved, so a burst of outside load hits all alike
                round_started = time.monotonic()
                if rounds and round_started + (round_started - began - set_up_s) / rounds > began + args.budget:
                    break  # another round would not fit in the time budget
                rounds += 1
                for concurrency in (1, 50):
                    for name, (url, headers) in urls.items():
                        key = f"{name}@{concurrency}"
                        run = asyncio.run(measure(url, headers, concurrency, args.seconds, args.max_requests))
                        results[key] = better(run, results.get(key))
        finally:
            stop_all(processes)
        results = {f"{name}@{c}": results[f"{name}@{c}"] for c in (1, 50) for name in urls}

    summary = {}
    for name in ("route", "route+auth"):
        for concurrency in (1, 50):
            direct, routed = results[f"direct@{concurrency}"], results[f"{name}@{concurrency}"]
            summary[f"{name}@{concurrency}"] = {
                "added_p50_ms": round(routed["p50_ms"] - direct["p50_ms"], 3),
                "throughput_ratio": round(routed["rps"] / direct["rps"], 3),
            }
    checks = {
        name: {"added_p50_ok": summary[f"{name}@1"]["added_p50_ms"] <= ADDED_P50_TARGET_MS,
               "throughput_ok": min(summary[f"{name}@{c}"]["throughput_ratio"] for c in (1, 50)) >= THROUGHPUT_RATIO_TARGET}
        for name in ("route", "route+auth")
    }

    print(f"{'target':<16}{'clients':>8}{'p50 ms':>10}{'p95 ms':>10}{'req/s':>10}{'added p50':>12}{'ratio':>8}")
    for key, row in results.items():
        name, concurrency = key.split("@")
        extra = summary.get(key, {})
        added = f"{extra['added_p50_ms']:+.3f}" if extra else ""
        ratio = f"{extra['throughput_ratio']:.2f}" if extra else ""
        print(f"{name:<16}{concurrency:>8}{row['p50_ms']:>10.3f}{row['p95_ms']:>10.3f}{row['rps']:>10.1f}{added:>12}{ratio:>8}")
    print(f"set-up {set_up_s:.1f} s, {rounds} round(s), total {time.monotonic() - began:.1f} s; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for name, check in checks.items():
        print(f"{name}: added p50 <= {ADDED_P50_TARGET_MS} ms at 1 client: {'yes' if check['added_p50_ok'] else 'NO'}; "
              f"throughput >= {THROUGHPUT_RATIO_TARGET:.0%} of direct: {'yes' if check['throughput_ok'] else 'NO'}")
    return {"results": results, "summary": summary, "checks": checks, "rounds": rounds, "set_up_s": round(set_up_s, 1),
            "load_average": os.getloadavg()[0],
            "targets": {"added_p50_ms": ADDED_P50_TARGET_MS, "throughput_ratio": THROUGHPUT_RATIO_TARGET}}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
