"""Load: tenant route invocations (/t/<tenant>/<path>) at 50 concurrent clients and at 1, against
a bare proxy doing the same forwarding and the upstream called directly, in the same run.

    .venv/bin/python -m bench.load_routes [--clients 50] [--seconds 4] [--rounds 4]   # about 4 min (5 with [pg+redis])

Loopback only: a local upstream (uvicorn serving bench.support.upstream_app, a fixed 200-byte
JSON answer), and daphne (`make run`'s server) on a temporary SQLite file with a tenant, an API
key, an integration for the upstream and the route GET /items (requireAuth: true, one action that
calls the upstream's GET /items). The tenant's route rate limit is lifted for the run.

- ours: GET /t/bench/items with the API key: authentication, the rate-limit count, the upstream
  call through the shared egress client, the answer, and the invocation record written after it;
- peer: the bare proxy (bench.peer_proxy on daphne + aiohttp: GET /items forwarded to the
  upstream through one pooled keep-alive ClientSession; no auth, no database): what forwarding
  alone costs on the same ASGI server;
- peer + tenant row: the bare proxy again, reading the tenant row by its slug on a thread before
  forwarding (sqlite3 or psycopg on ours' database, no ORM): the floor of a routed request as the
  issue designs it (one read of the tenant row per request, which carries the key cache's version).
  Its rows compare it with the bare proxy (what the design leaves of the targets) and ours with it
  (what our own code costs above it); one per database (SQLite, and Postgres with [pg+redis], where
  it also counts the call in Redis, as ours counts its rate limit there: one round trip);
- direct: GET <upstream>/items, the floor under both (its rows are marked "direct upstream").
- ours [uvicorn]: ours again, served by `make run SERVER=uvicorn` (backflow.serve_uvicorn: uvicorn
  on uvloop with h11) on the same database, against the same peer (the server operators may pick),
  and against the bare proxy served the same way (rows "vs bare proxy on uvicorn");
- ours [pg+redis], the production profile, when DATABASE_URL (postgres://...) and REDIS_URL are set:
  ours again, as deployed, on a throw-away database made on that Postgres server (dropped after)
  and Redis (cache and rate limit) in the benchmark's Redis database (bench.support.production_profile),
  measured in the same rounds against the same peer. Without those variables it is skipped (the
  notes say why).
Each client keeps one connection open (bench.support.KeepAliveClient, a light asyncio client, so
the load generator in this process takes little of the 2 CPUs) and sends its next request when
the answer arrives. First at 1 client (`--single-seconds` per target and round), then at
`--clients`: the targets alternate for `--rounds` rounds of `--seconds` each (after a 1 s warm-up;
short rounds, so that a burst of other load on the shared CPUs falls on every target alike);
the samples of all rounds are pooled. Measured: errors (anything but 200; target zero), latency
p50/p95/p99, throughput, the server's CPU time per request (daphne for ours and the peer, uvicorn
for direct) and RSS before, at the peak and after. Ratios are ours / the bare proxy. Targets:
requests/s >= 0.5x the peer's, CPU per request <= 2x the peer's, zero errors, and at 1 client the
added p50 (ours p50 - direct p50) <= 1 ms.
"""

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench.support import (
    PRODUCTION, UVICORN, Child, Memory, create_platform, http_load, latency_ms, mib, peer_env, platform_env, print_rows,
    production_profile, production_stores, row, stop_all,
)

REQUESTS_TARGET = 0.5  # ours requests/s at least this share of the bare proxy's
CPU_TARGET = 2.0  # ours CPU per request at most this multiple of the bare proxy's
ADDED_P50_TARGET_MS = 1.0  # at 1 client, ours p50 - direct p50


def start_platform(workdir, env, upstream, apps, name="daphne"):
    """Tenant, API key, one daphne per ASGI app in `apps` on the database of `env`, the integration
    for `upstream` and the route GET /items; (the daphnes, auth headers)."""
    import httpx

    key = create_platform(env)
    daphnes = []
    try:
        for index, app in enumerate(apps):
            daphnes.append(Child.backflow_daphne(app, env, workdir / f"{name}-{index}.log"))
        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=daphnes[0].url, headers=auth, timeout=30) as api:
            api.post("/api/integrations/", json={
                "name": "catalog", "baseUrl": upstream.url, "auth": {"type": "none"},
                "endpoints": [{"name": "listItems", "method": "get", "path": "/items"}]}).raise_for_status()
            api.post("/api/routes/", json={
                "path": "/items", "method": "get", "requireAuth": True,
                "integrations": {"actions": [{"id": "items", "integration": "catalog", "action": "listItems"}]},
            }).raise_for_status()
        for daphne in daphnes:
            check = httpx.get(f"{daphne.url}/t/bench/items", headers=auth, timeout=30)
            assert check.status_code == 200 and check.json() == httpx.get(f"{upstream.url}/items").json(), check.text
        return daphnes, auth
    except BaseException:
        stop_all(daphnes)
        raise


def ours_env(workdir, extra_env):
    """The environment of ours (on daphne or uvicorn) on the SQLite database of set_up."""
    return platform_env(f"sqlite:///{workdir / 'bench.sqlite3'}", BACKFLOW_EGRESS_ALLOW="127.0.0.1", **extra_env)


def set_up(workdir, extra_env, apps=("backflow.asgi:application",)):
    """The upstream, then one daphne per ASGI app in `apps` on one SQLite database: (upstream, the
    first daphne, auth headers, every child); the other daphnes are children[2:]."""
    env = ours_env(workdir, extra_env)
    children = [Child.uvicorn("bench.support:upstream_app", peer_env(), workdir / "upstream.log")]
    try:
        daphnes, auth = start_platform(workdir, env, children[0], apps)
    except BaseException:
        stop_all(children)
        raise
    return children[0], daphnes[0], auth, children + daphnes


def start_peer(workdir, upstream, tenant_database=None, name="peer-proxy", redis_url=None, ours_server=False):
    """The bare proxy (bench.peer_proxy) on daphne, checked to forward what the upstream answers;
    with `tenant_database` (ours), reading the tenant row first on every request (and counting the
    call in `redis_url`). On daphne as `python -m daphne` starts it (the issue's peer), or with
    `ours_server` as `make run` starts ours (backflow.serve_daphne, on uvloop)."""
    import httpx

    floor = {"BENCH_TENANT_DATABASE": tenant_database, "BENCH_TENANT_REDIS": redis_url}
    env = peer_env(BENCH_UPSTREAM_URL=upstream.url, **{key: value for key, value in floor.items() if value})
    proxy = (Child.backflow_daphne if ours_server else Child.daphne)("bench.peer_proxy:application", env, workdir / f"{name}.log")
    try:
        direct, forwarded = httpx.get(f"{upstream.url}/items"), httpx.get(f"{proxy.url}/items")
        assert (forwarded.status_code, forwarded.content, forwarded.headers["content-type"]) == (
            direct.status_code, direct.content, direct.headers["content-type"]), forwarded.text
    except BaseException:
        proxy.stop()
        raise
    return proxy


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


def cpu_ms_per_request(result):
    return round(result["memory"]["cpuSeconds"] * 1000 / max(1, result["requests"]), 3)


TENANT_ROW_PEERS = {"ours": "peer_tenant_row", "production": "peer_tenant_row_production"}


def tenant_row_floor_rows(results, single, names):
    """The floor of a routed request as the issue designs it (the bare proxy that also reads the
    tenant row on a thread, on ours' database): that peer against the bare proxy (how much of the
    targets the design itself leaves), and ours against that peer (what our own code costs)."""
    peer = results["peer"]
    rows = []
    for name, tag in names:
        floor = TENANT_ROW_PEERS.get(name)
        if floor not in results:
            continue
        bare, ours = results[floor], results[name]
        rows += [
            row(f"bare proxy + tenant row{tag}: errors", bare["errors"] + single[floor]["errors"]),
            row(f"bare proxy + tenant row{tag}: requests/s vs bare proxy", bare["perSecond"], peer["perSecond"]),
            row(f"bare proxy + tenant row{tag}: CPU ms per request vs bare proxy", cpu_ms_per_request(bare), cpu_ms_per_request(peer)),
            row(f"requests/s{tag} vs bare proxy + tenant row", ours["perSecond"], bare["perSecond"]),
            row(f"server CPU ms per request{tag} vs bare proxy + tenant row", cpu_ms_per_request(ours), cpu_ms_per_request(bare)),
            row(f"latency p50 ms at 1 client{tag} vs bare proxy + tenant row", single[name]["latencyMs"]["p50"],
                single[floor]["latencyMs"]["p50"]),
        ]
    return rows


def rows_of(results, single, names):
    """Rows of ours (and of ours [pg+redis]) against the bare proxy; the direct upstream's alone."""
    peer, direct = results["peer"], results["direct"]
    peer_cpu = cpu_ms_per_request(peer)
    added_peer = round(single["peer"]["latencyMs"]["p50"] - single["direct"]["latencyMs"]["p50"], 3)
    rows = []
    for name, tag in names:
        ours = results[name]
        cpu = cpu_ms_per_request(ours)
        errors, peer_errors = ours["errors"] + single[name]["errors"], peer["errors"] + single["peer"]["errors"]
        added = round(single[name]["latencyMs"]["p50"] - single["direct"]["latencyMs"]["p50"], 3)
        rows += [
            row(f"errors{tag}", errors, peer_errors, ratio_of=False, target="0", met=errors == 0),
            row(f"requests/s{tag}", ours["perSecond"], peer["perSecond"], target=f">= {REQUESTS_TARGET}x",
                met=ours["perSecond"] >= REQUESTS_TARGET * peer["perSecond"]),
            row(f"server CPU ms per request{tag}", cpu, peer_cpu, target=f"<= {CPU_TARGET:g}x", met=cpu <= CPU_TARGET * peer_cpu),
            *(row(f"latency {p} ms{tag}", ours["latencyMs"][p], peer["latencyMs"][p]) for p in ("p50", "p95", "p99")),
            row(f"RSS before/peak/after MiB{tag}", mib(ours["memory"]), mib(peer["memory"]), ratio_of=False),
            row(f"latency p50 ms at 1 client{tag}", single[name]["latencyMs"]["p50"], single["peer"]["latencyMs"]["p50"]),
            row(f"added p50 at 1 client (ms){tag}", added, added_peer, ratio_of=False, target=f"<= {ADDED_P50_TARGET_MS:g}",
                met=added <= ADDED_P50_TARGET_MS),
        ]
    if "peer_uvloop" in results:  # ours against the bare proxy on ours' server too (daphne on uvloop, as make run starts both)
        bare = results["peer_uvloop"]
        rows += [
            row("bare proxy on daphne + uvloop: errors", bare["errors"] + single["peer_uvloop"]["errors"]),
            row("requests/s vs bare proxy on daphne + uvloop", results["ours"]["perSecond"], bare["perSecond"]),
            row("server CPU ms per request vs bare proxy on daphne + uvloop", cpu_ms_per_request(results["ours"]), cpu_ms_per_request(bare)),
            row("latency p50 ms at 1 client vs bare proxy on daphne + uvloop", single["ours"]["latencyMs"]["p50"],
                single["peer_uvloop"]["latencyMs"]["p50"]),
        ]
    if "peer_uvicorn" in results:  # ours on uvicorn against the bare proxy on uvicorn too: the same server under both
        ours, bare = results["uvicorn"], results["peer_uvicorn"]
        rows += [
            row("bare proxy on uvicorn: errors", bare["errors"] + single["peer_uvicorn"]["errors"]),
            row(f"requests/s{UVICORN} vs bare proxy on uvicorn", ours["perSecond"], bare["perSecond"]),
            row(f"server CPU ms per request{UVICORN} vs bare proxy on uvicorn", cpu_ms_per_request(ours),
                cpu_ms_per_request(bare)),
            row(f"latency p50 ms at 1 client{UVICORN} vs bare proxy on uvicorn", single["uvicorn"]["latencyMs"]["p50"],
                single["peer_uvicorn"]["latencyMs"]["p50"]),
        ]
    rows += tenant_row_floor_rows(results, single, names)
    rows += [
        row("direct upstream: errors", direct["errors"] + single["direct"]["errors"]),
        row("direct upstream: requests/s", direct["perSecond"]),
        row("direct upstream: server CPU ms per request", cpu_ms_per_request(direct)),
        *(row(f"direct upstream: latency {p} ms", direct["latencyMs"][p]) for p in ("p50", "p95", "p99")),
        row("direct upstream: latency p50 ms at 1 client", single["direct"]["latencyMs"]["p50"]),
    ]
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each round of each target at --clients")
    parser.add_argument("--single-seconds", type=float, default=1.5, help="length of each round of each target at 1 client")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra environment of ours (e.g. CONN_MAX_AGE=60)")
    parser.add_argument("--no-production", action="store_true", help="skip the [pg+redis] profile even when DATABASE_URL and REDIS_URL are set")
    args = parser.parse_args(argv)
    extra_env = dict(item.split("=", 1) for item in args.env)
    database_server, redis_url, skipped = (None, None, "production profile skipped: --no-production") if args.no_production \
        else production_profile()

    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="backflow-bench-load-routes-"))
    children = []
    names = [("ours", "")]
    try:
        with ExitStack() as stack:
            upstream, daphne, auth, children = set_up(workdir, extra_env)
            children.append(start_peer(workdir, upstream))
            servers = {"direct": (upstream, f"{upstream.url}/items", {}), "peer": (children[-1], f"{children[-1].url}/items", {}),
                       "ours": (daphne, f"{daphne.url}/t/bench/items", auth)}
            children.append(start_peer(workdir, upstream, name="peer-proxy-uvloop", ours_server=True))
            servers["peer_uvloop"] = (children[-1], f"{children[-1].url}/items", {})
            children.append(start_peer(workdir, upstream, str(workdir / "bench.sqlite3"), "peer-tenant-row", ours_server=True))
            servers["peer_tenant_row"] = (children[-1], f"{children[-1].url}/items", {})
            children.append(Child.backflow_uvicorn(ours_env(workdir, extra_env), workdir / "uvicorn.log"))
            servers["uvicorn"] = (children[-1], f"{children[-1].url}/t/bench/items", auth)
            names.append(("uvicorn", UVICORN))
            children.append(Child.peer_uvicorn("bench.peer_proxy:application", peer_env(BENCH_UPSTREAM_URL=upstream.url),
                                               workdir / "peer-uvicorn.log"))
            servers["peer_uvicorn"] = (children[-1], f"{children[-1].url}/items", {})
            if database_server:
                database_url = stack.enter_context(production_stores(database_server, redis_url))
                stack.callback(stop_all, children)  # before the database is dropped
                env = platform_env(database_url, redis_url, BACKFLOW_EGRESS_ALLOW="127.0.0.1", **extra_env)
                (production,), production_auth = start_platform(workdir, env, upstream, ["backflow.asgi:application"], "production")
                children.append(production)
                servers["production"] = (production, f"{production.url}/t/bench/items", production_auth)
                children.append(start_peer(workdir, upstream, database_url, "peer-tenant-row-postgres", redis_url, ours_server=True))
                servers["peer_tenant_row_production"] = (children[-1], f"{children[-1].url}/items", {})
                names.append(("production", PRODUCTION))
            time.sleep(0.5)
            print(f"load_routes: 1 client, {args.rounds} x {args.single_seconds:g} s per target ...", flush=True)
            single = asyncio.run(measure({name: (url, headers, []) for name, (_, url, headers) in servers.items()},
                                         1, args.single_seconds, args.rounds))
            print(f"load_routes: {args.clients} clients, {args.rounds} x {args.seconds:g} s per target ...", flush=True)
            memory = {name: Memory(child) for name, (child, _, _) in servers.items()}
            results = asyncio.run(measure({name: (url, headers, [memory[name]]) for name, (_, url, headers) in servers.items()},
                                          args.clients, args.seconds, args.rounds))
            for name, (child, _, _) in servers.items():
                memory[name].settle(1.0 if name == "direct" else 0.5)
                results[name]["memory"] = memory[name].report()
                if not child.alive():
                    results[name]["serverDied"] = child.output(1500)
            stop_all(children)
    finally:
        stop_all(children)
        shutil.rmtree(workdir, ignore_errors=True)

    rows = rows_of(results, single, names)
    about = (f"1 client ({args.rounds} x {args.single_seconds:g} s per target), then {args.clients} keep-alive clients "
             f"({args.rounds} x {args.seconds:g} s per target), targets alternating; ours: daphne as `make run` starts it "
             "(backflow.serve_daphne: on uvloop), SQLite (temp file), "
             "GET /t/bench/items (API key, 1 action -> local upstream, invocation recorded); peer: bare ASGI proxy "
             "(bench.peer_proxy: daphne as `python -m daphne` starts it + one pooled aiohttp ClientSession, no auth, no DB), "
             "and the same on daphne + uvloop (ours' server); bare proxy + tenant row: the same proxy on ours' server reading the tenant row (sqlite3 / psycopg on a thread pool) per request, and with [pg+redis] counting it in Redis; direct upstream: uvicorn called "
             "directly (its rows give its own numbers); [uvicorn]: ours served by `make run SERVER=uvicorn` (uvicorn on uvloop, "
             "h11) on the same database, against the same peer and against the bare proxy on uvicorn; CPU and RSS: the server process of each; "
             + (f"{PRODUCTION.strip()}: ours on a throw-away Postgres database and Redis {redis_url}, same rounds, same peer"
                if database_server else skipped)
             + (f"; ours with {' '.join(args.env)}" if args.env else ""))
    single_p50 = {name: r["latencyMs"]["p50"] for name, r in single.items()}
    outcome = {"about": about, "rows": rows, "targets": results, "singleClient": single, "singleClientP50Ms": single_p50,
               "production": None if database_server else skipped, "seconds": round(time.monotonic() - started, 1),
               "zeroErrorsMet": all(results[name]["errors"] == single[name]["errors"] == 0 for name, _ in names)}
    print_rows(rows, 44)
    for name, _ in names:
        for failure in results[name].get("firstFailures", []) + single[name].get("firstFailures", []):
            print(f"  {name} failure: {failure}")
    return outcome


if __name__ == "__main__":
    sys.exit(0 if main()["zeroErrorsMet"] else 1)
