"""Load: workflow runs queued faster than they run, drained by `run_worker` children; peer:
django-tasks-db's own `db_worker` draining equivalent plain tasks, in the same run.

    .venv/bin/python -m bench.load_workflows [--runs 300] [--workers 2] [--postgres URL [--redis URL]]   # about 1-1.5 min (2.5 with [pg+redis])

Loopback only. A throw-away database (a SQLite file in a temporary folder, or with --postgres a
database backflow_bench_<random> created on that server and dropped after), a local upstream
(uvicorn, bench.support.upstream_app), daphne, and the workflow `fetch` of one step: an
integration tool calling the upstream's GET /items (the cheapest real step; a workflow needs at
least one). With --redis (and --postgres) ours (daphne and run_worker) also has that REDIS_URL, as
deployed; the peer never does.

The production profile: when DATABASE_URL (postgres://...) and REDIS_URL are set (and no
--postgres is given), the whole benchmark runs a second time, ours and peer, in a child process
(Django is set up once per process) with --postgres and --redis on those servers
(bench.support.production_profile: a throw-away database, the benchmark's own Redis database),
and its rows are added with the suffix " [pg+redis]": ours on Postgres + Redis against
django-tasks-db alone on the same Postgres. Without those variables it is skipped (the notes say
why); --no-production skips it too.

- ours: runs queued with POST /api/workflows/fetch/runs/ (API key) by `--concurrency` clients;
  `--workers` `manage.py run_worker` children execute them.
- peer: the same number of django-tasks-db `manage.py db_worker` children (the engine under
  run_worker) executing `bench.peer_tasks.fetch_items` tasks (the same upstream GET, its answer as
  the result; no run/step records, audit or heartbeat), queued by the same clients through a bare
  ASGI endpoint under daphne (`bench.peer_tasks.enqueue_app`: no auth, validation or audit).
Two phases each, `--runs` runs apiece:
- live: the workers are up and idle, then the burst is POSTed while they drain it (the backlog
  is sampled every 0.2 s): queue-to-finish latency p50/p95/p99 from the database's own timestamps
  (created -> finished), the enqueue rate, and the workers' RSS (before, peak, after) and CPU time;
- full queue: the burst is queued with no worker running, then the workers start: the drain rate in
  steady state (runs finished between the 10th and 90th percentile finish times over that time).
After each phase the database is checked: every POST answered 201, every run exists and
succeeded, has exactly one step record and exactly one task, claimed once (none lost, none run
twice); the peer's tasks alike. Errors: target zero. Ratios are ours/peer. Idle workers poll
every 1 s (django-tasks-db's default), both.
"""

import argparse
import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench.support import (
    PRODUCTION, PYTHON, ROOT, Child, Memory, PostgresDatabase, create_platform, latency_ms, peer_env, platform_env, print_rows,
    production_profile, production_stores, redis_available, redis_database, row, stop_all,
)

WORKFLOW = {
    "id": "fetch", "name": "Fetch", "description": "One integration call to the local upstream.",
    "workflows": [{"name": "main", "steps": [{"id": "items", "action": "items"}]}],
    "tools": [{"name": "items", "type": "integration", "params": {"integration": "catalog", "action": "listItems"}}],
}
DRAIN_BUDGET = 90  # seconds to wait for a burst to drain before counting what is left as lost


def set_up_django(env):
    """This process on the bench database (after the children migrated it), for the checks and the peer."""
    for name in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    os.environ.update({k: v for k, v in env.items() if k in ("DATABASE_URL", "SECRET_KEY", "BACKFLOW_SECRETS_KEY",
                                                              "DJANGO_SETTINGS_MODULE", "BACKFLOW_EGRESS_ALLOW")})
    import django

    django.setup()


def database_label():
    from django.db import connection

    if connection.vendor == "sqlite":
        return "SQLite (WAL, synchronous=NORMAL, temp file)"
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        return f"PostgreSQL {cursor.fetchone()[0]} (database {connection.settings_dict['NAME']})"


class Workers:
    """`count` worker children, each watched (memory, CPU) from before the burst to the end of the drain."""

    def __init__(self, count, args, env, workdir, name):
        self.children = [Child.manage(env, workdir / f"{name}-{n}.log", *args) for n in range(count)]
        self.memories = [Memory(child) for child in self.children]

    def wait_idle(self):
        for child in self.children:
            child.wait_idle()

    def start_watch(self):
        for memory in self.memories:
            memory.start()

    def sample(self):
        for memory in self.memories:
            memory.sample()

    def stop_watch(self):
        for memory in self.memories:
            memory.stop()
            memory.settle(0)
        died = [child.output(1000) for child in self.children if not child.alive()]
        return {"workers": [memory.report() for memory in self.memories], "died": died}


def summarize_times(items):
    """items: (enqueued, started, finished) datetimes: queue-to-finish latencies, and the drain rate in
    steady state: the runs that finished between the 10th and the 90th percentile finish time over
    that time (so neither a fresh worker's first imports nor the last stragglers count)."""
    done = [i for i in items if i[2] is not None]
    if not done:
        return {"queueToFinishMs": None, "drainPerSecond": None}
    waits = [(finished - enqueued).total_seconds() for enqueued, _, finished in done]
    finishes = sorted(finished for _, _, finished in done)
    low, high = round(0.1 * (len(finishes) - 1)), round(0.9 * (len(finishes) - 1))
    span = (finishes[high] - finishes[low]).total_seconds()
    whole = (finishes[-1] - min(started for _, started, _ in done if started)).total_seconds()
    return {"queueToFinishMs": latency_ms(waits, 1), "drainSeconds": round(whole, 2),
            "drainPerSecond": round((high - low) / span, 1) if span > 0 else None}


class Ours:
    """POST /api/workflows/fetch/runs/ -> WorkflowRun + its execute_workflow_run task; run_worker."""

    # One run at a time per worker, as db_worker executes one task at a time: the same slots on
    # both sides (and within the tenant's BACKFLOW_TENANT_RUNNING_RUNS, so no run is deferred).
    name, worker = "ours", ["run_worker", "--no-startup-delay", "--concurrency", "1"]

    def __init__(self, daphne, key):
        self.url, self.headers = f"{daphne.url}/api/workflows/fetch/runs/", {"Authorization": f"Bearer {key}"}

    @staticmethod
    def body(n):
        return {"input": {"n": n}}

    @staticmethod
    def counts():
        """(waiting, finished) over all runs."""
        from workflows_app.models import WorkflowRun

        runs = WorkflowRun.all_tenants
        return runs.filter(status=WorkflowRun.Status.QUEUED).count(), runs.filter(status__in=WorkflowRun.FINISHED).count()

    @staticmethod
    def check(ids):
        """Every queued run exists, succeeded, has one step record and one task claimed once."""
        from django.db.models import Count
        from django_tasks_db.models import DBTaskResult

        from workflows_app.models import StepRun, WorkflowRun

        runs = {str(r.id): r for r in WorkflowRun.all_tenants.filter(pk__in=ids)}
        steps = dict(StepRun.all_tenants.filter(run_id__in=ids).values("run_id").annotate(n=Count("id")).values_list("run_id", "n"))
        tasks = {}
        for result in DBTaskResult.objects.filter(task_path="workflows_app.tasks.execute_workflow_run"):
            tasks.setdefault(result.args_kwargs["args"][0], []).append(result)
        checks = {
            "lost": sum(1 for i in ids if i not in runs),
            "notSucceeded": sum(1 for i in ids if i in runs and runs[i].status != WorkflowRun.Status.SUCCEEDED),
            "stepRecordsNotOne": sum(1 for i in ids if i in runs and steps.get(runs[i].pk, 0) != 1),
            "tasksNotOne": sum(1 for i in ids if len(tasks.get(i, [])) != 1),
            "taskClaimedNotOnce": sum(1 for i in ids for t in tasks.get(i, []) if len(t.worker_ids) != 1 or t.status != "SUCCESSFUL"),
        }
        statuses = {}
        for r in runs.values():
            statuses[r.status] = statuses.get(r.status, 0) + 1
        return checks, statuses, [(runs[i].created_at, runs[i].started_at, runs[i].finished_at) for i in ids if i in runs]


class Peer:
    """POST to bench.peer_tasks:enqueue_app -> one fetch_items task; django-tasks-db's db_worker."""

    name, worker = "peer", ["db_worker", "--no-startup-delay"]
    path = "bench.peer_tasks.fetch_items"

    def __init__(self, enqueuer, upstream):
        self.url, self.headers, self.target = f"{enqueuer.url}/enqueue", {}, f"{upstream.url}/items"

    def body(self, n):
        return {"url": self.target}

    @classmethod
    def counts(cls):
        from django_tasks_db.models import DBTaskResult

        tasks = DBTaskResult.objects.filter(task_path=cls.path)
        return tasks.filter(status="READY").count(), tasks.finished().count()

    @classmethod
    def check(cls, ids):
        from django_tasks_db.models import DBTaskResult

        results = {str(r.id): r for r in DBTaskResult.objects.filter(task_path=cls.path, pk__in=ids)}
        checks = {
            "lost": sum(1 for i in ids if i not in results),
            "notSucceeded": sum(1 for i in ids if i in results and results[i].status != "SUCCESSFUL"),
            "taskClaimedNotOnce": sum(1 for i in ids if i in results and len(results[i].worker_ids) != 1),
        }
        statuses = {}
        for r in results.values():
            statuses[r.status] = statuses.get(r.status, 0) + 1
        return checks, statuses, [(r.enqueued_at, r.started_at, r.finished_at) for r in results.values()]


async def post_burst(target, runs, concurrency, watch=None):
    """POST `runs` times from `concurrency` clients (`watch()` called every 0.2 s meanwhile);
    (ids, errors, seconds, failures)."""
    import httpx

    ids, failures = [], []
    errors = [0]
    queue = asyncio.Queue()
    for n in range(runs):
        queue.put_nowait(n)

    async def client():
        async with httpx.AsyncClient(headers=target.headers, timeout=60) as http:
            while not queue.empty():
                n = queue.get_nowait()
                try:
                    response = await http.post(target.url, json=target.body(n))
                    if response.status_code == 201:
                        ids.append(response.json()["id"])
                        continue
                    failure = f"{response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as exc:
                    failure = f"{exc.__class__.__name__}: {exc}"
                errors[0] += 1
                if len(failures) < 5:
                    failures.append(failure)

    async def watcher(stop):
        while not stop.is_set():
            await asyncio.to_thread(watch)
            try:
                await asyncio.wait_for(stop.wait(), 0.2)
            except TimeoutError:
                pass

    stop = asyncio.Event()
    watching = asyncio.get_running_loop().create_task(watcher(stop)) if watch else None
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    stop.set()
    if watching:
        await watching
    return ids, errors[0], seconds, failures


def run_phase(target, args, env, workdir, phase):
    """live: workers idle, then the burst while they drain it; backlog: the burst queued with no
    worker running, then the workers started on the full queue."""
    from django.db import close_old_connections

    workers = None
    backlog = [0]
    finished_before = target.counts()[1]

    def watch():
        try:
            backlog[0] = max(backlog[0], target.counts()[0])
            if workers:
                workers.sample()
        finally:
            close_old_connections()

    try:
        if phase == "live":
            workers = Workers(args.workers, target.worker, env, workdir, f"{target.name}-{phase}")
            workers.wait_idle()  # started up and polling
            workers.start_watch()
        ids, post_errors, burst_seconds, failures = asyncio.run(post_burst(target, args.runs, args.concurrency, watch))
        if phase == "backlog":
            workers = Workers(args.workers, target.worker, env, workdir, f"{target.name}-{phase}")
            workers.start_watch()
        deadline = time.monotonic() + DRAIN_BUDGET
        drained = False
        while time.monotonic() < deadline and not drained:
            watch()
            drained = target.counts()[1] - finished_before >= len(ids)
            time.sleep(0.1)
        report = workers.stop_watch()
    finally:
        if workers:
            stop_all(workers.children)
    checks, statuses, times = target.check(ids)
    result = {"runs": args.runs, "queued": len(ids), "postErrors": post_errors, "errors": post_errors + sum(checks.values()),
              "drained": drained, "checks": checks, "statuses": statuses, "burstSeconds": round(burst_seconds, 2),
              "enqueuePerSecond": round(len(ids) / burst_seconds, 1), "maxBacklog": backlog[0], **summarize_times(times), **report}
    if failures:
        result["firstFailures"] = failures
    return result


# -- the run -----------------------------------------------------------------------------------

def rows_of(ours, peer, workers, tag=""):
    """ours / peer: {"live": phase result, "backlog": phase result}; `tag` ends every metric's name."""

    def errors(result):
        return result["live"]["errors"] + result["backlog"]["errors"]

    def worker_mib(result):  # the largest worker's, of the live phase
        return "/".join(f"{max(w[k] for w in result['live']['workers']) / 1024:.0f}" for k in ("beforeKiB", "peakKiB", "afterKiB"))

    def cpu_per_run(result):
        return round(sum(w["cpuSeconds"] for w in result["live"]["workers"]) * 1000 / max(1, result["live"]["queued"]), 2)

    met = errors(ours) == 0 and ours["live"]["drained"] and ours["backlog"]["drained"]
    rows = [row(f"errors (failed/lost/run twice){tag}", errors(ours), errors(peer), ratio_of=False, target="0", met=met)]
    lat, peer_lat = ours["live"]["queueToFinishMs"] or {}, peer["live"]["queueToFinishMs"] or {}
    for p in ("p50", "p95", "p99"):
        rows.append(row(f"queue-to-finish {p} ms{tag}", lat.get(p), peer_lat.get(p)))
    rows.append(row(f"enqueue runs/s (POST burst){tag}", ours["live"]["enqueuePerSecond"], peer["live"]["enqueuePerSecond"]))
    rows.append(row(f"max backlog while draining{tag}", ours["live"]["maxBacklog"], peer["live"]["maxBacklog"], ratio_of=False))
    rows.append(row(f"drain runs/s (full queue){tag}", ours["backlog"]["drainPerSecond"], peer["backlog"]["drainPerSecond"]))
    rows.append(row(f"worker RSS before/peak/after MiB (max of {workers}){tag}", worker_mib(ours), worker_mib(peer), ratio_of=False))
    rows.append(row(f"worker CPU ms per run{tag}", cpu_per_run(ours), cpu_per_run(peer)))
    return rows


def run_profile(args, workdir, database_url, redis_url=None):
    """Ours and the peer, both phases, on `database_url` (ours with `redis_url` too); this process's
    Django is set up on that database (once per process). Returns (results, database label)."""
    results = {}
    children = []
    try:
        env = platform_env(database_url, redis_url, BACKFLOW_EGRESS_ALLOW="127.0.0.1")
        peer_platform_env = {name: value for name, value in env.items() if name != "REDIS_URL"}  # django-tasks-db alone
        upstream = Child.uvicorn("bench.support:upstream_app", peer_env(), workdir / "upstream.log")
        children.append(upstream)
        key = create_platform(env)
        daphne = Child.backflow_daphne("backflow.asgi:application", env, workdir / "daphne.log")
        children.append(daphne)
        import httpx

        with httpx.Client(base_url=daphne.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as api:
            api.post("/api/integrations/", json={
                "name": "catalog", "baseUrl": upstream.url, "auth": {"type": "none"},
                "endpoints": [{"name": "listItems", "method": "get", "path": "/items"}]}).raise_for_status()
            api.post("/api/workflows/", json=WORKFLOW).raise_for_status()
        set_up_django(env)
        database = database_label() + (f" + Redis {redis_url} (ours)" if redis_url else "")
        enqueuer = Child.daphne("bench.peer_tasks:enqueue_app", peer_platform_env, workdir / "enqueuer.log")
        children.append(enqueuer)
        for target, target_env in ((Ours(daphne, key), env), (Peer(enqueuer, upstream), peer_platform_env)):
            results[target.name] = {}
            for phase in ("live", "backlog"):
                print(f"load_workflows: {target.name}, {phase} ({args.runs} runs, {args.workers} workers) ...", flush=True)
                results[target.name][phase] = run_phase(target, args, target_env, workdir, phase)
        from django.db import connections

        connections.close_all()
    finally:
        stop_all(children)
    return results, database


def run_production(args, workdir, database_server, redis_url):
    """The production profile in a child process (this one's Django is on the first database)."""
    out = workdir / "production.json"
    command = [PYTHON, "-m", "bench.load_workflows", "--postgres", database_server, "--redis", redis_url, "--runs", str(args.runs),
               "--workers", str(args.workers), "--concurrency", str(args.concurrency), "--json", str(out)]
    done = subprocess.run(command, cwd=ROOT, stdin=subprocess.DEVNULL)
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"the production profile's run exited with {done.returncode}")
    production = json.loads(out.read_text())
    return production["targets"], production["database"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300, help="runs per phase (live burst, then full queue)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=20, help="clients POSTing the burst")
    parser.add_argument("--postgres", metavar="URL", help="a Postgres server: run on a database created there (and dropped)")
    parser.add_argument("--redis", metavar="URL", help="with --postgres: ours with Redis on this server (in the bench's own database, "
                                                           "which must be empty and is emptied after)")
    parser.add_argument("--no-production", action="store_true", help="skip the [pg+redis] profile even when DATABASE_URL and REDIS_URL are set")
    parser.add_argument("--json", metavar="PATH", help=argparse.SUPPRESS)  # the production profile's child: its results go there
    args = parser.parse_args(argv)
    if args.redis and not args.postgres:
        parser.error("--redis goes with --postgres")
    if args.redis:  # the benchmark's own database of that server, never the one the URL names (it is emptied after)
        args.redis = redis_database(args.redis)
        ok, note = redis_available(args.redis)
        if not ok:
            parser.error(note)
    if args.postgres or args.no_production:
        database_server = redis_url = None
        skipped = "production profile skipped: " + ("--postgres given" if args.postgres else "--no-production")
    else:
        database_server, redis_url, skipped = production_profile()

    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="backflow-bench-load-workflows-"))
    try:
        with ExitStack() as stack:
            if args.postgres and args.redis:
                database_url = stack.enter_context(production_stores(args.postgres, args.redis))
            elif args.postgres:
                database_url = stack.enter_context(PostgresDatabase(args.postgres, f"backflow_bench_{secrets.token_hex(4)}")).url
            else:
                database_url = f"sqlite:///{workdir / 'bench.sqlite3'}"
            results, database = run_profile(args, workdir, database_url, args.redis)
        if args.json:
            Path(args.json).write_text(json.dumps({"targets": results, "database": database}, default=str))
            return {"targets": results, "database": database, "zeroErrorsMet": True}  # the parent judges the errors
        if database_server:
            production_dir = workdir / "production"
            production_dir.mkdir()
            results["production"], production_database = run_production(args, production_dir, database_server, redis_url)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    rows = rows_of(results["ours"], results["peer"], args.workers)
    if database_server:
        rows += rows_of(results["production"]["ours"], results["production"]["peer"], args.workers, PRODUCTION)
    about = (f"{args.runs} runs of a 1-step workflow (integration GET to a local upstream) POSTed by {args.concurrency} clients "
             f"while {args.workers} run_worker drain them (live), then {args.runs} more queued before the workers start (full queue); "
             f"peer: django-tasks-db db_worker on plain tasks doing the same GET, POSTed to a bare ASGI enqueue endpoint; {database}; "
             + (f"{PRODUCTION.strip()}: the same on {production_database}, the peer on that Postgres without Redis"
                if database_server else skipped))
    outcome = {"about": about, "rows": rows, "targets": results, "database": database, "seconds": round(time.monotonic() - started, 1),
               "production": None if database_server else skipped,
               "zeroErrorsMet": all(line["met"] for line in rows if line["metric"].startswith("errors"))}
    print_rows(rows, 44 + len(PRODUCTION), 10)
    for profile, tag in ((results, ""), (results.get("production"), PRODUCTION)):
        for name, phases in (profile or {}).items():
            for phase, numbers in phases.items() if name != "production" else ():
                print(f"  {name} {phase}{tag}: checks {numbers['checks']} statuses {numbers['statuses']}")
                for failure in numbers.get("firstFailures", []):
                    print(f"    failure: {failure}")
    return outcome


if __name__ == "__main__":
    sys.exit(0 if main()["zeroErrorsMet"] else 1)
