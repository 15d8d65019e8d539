"""Shared pieces of the benchmarks (not a benchmark itself): child processes (daphne, uvicorn,
manage.py commands) on free loopback ports with their memory, the throw-away platform (database,
tenant, API key), the local upstream, the bare MCP SDK peer, Redis, percentiles and result rows.

Heavy imports (the MCP SDK, httpx) happen inside the functions that need them: daphne and uvicorn
children load `bench.support:peer_app` / `bench.support:upstream_app` from this module.
"""

import asyncio
import base64
import contextlib
import json
import os
import resource
import secrets
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from tests.live import free_port, wait_for_port  # the tests' server children use the same two

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
HOST = "127.0.0.1"
REDIS_DB = 9  # the benchmarks' own Redis database (tests use 7, 12, 13 and 14)
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
# The per-tenant and per-credential budgets against abuse (one tenant, one key makes all the load
# here); the fairness shares (database threads, route calls and runs at once) stay as deployed.
LIFTED_LIMITS = {
    "BACKFLOW_MCP_RATE_LIMIT": "1000000000,60", "BACKFLOW_ROUTE_RATE_LIMIT": "1000000000,60",
    "BACKFLOW_SSE_SESSIONS_PER_PRINCIPAL": "1000000", "BACKFLOW_TENANT_RUNS_PER_MINUTE": "1000000000",
}


# -- numbers -----------------------------------------------------------------------------------

def percentile(samples, fraction):
    """Nearest-rank style percentile of `samples` at `fraction` (0.95 for p95)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def latency_ms(samples, digits=2):
    """p50/p95/p99/max in milliseconds of samples in seconds (None when there are none)."""
    if not samples:
        return None
    return {"p50": round(percentile(samples, 0.50) * 1000, digits), "p95": round(percentile(samples, 0.95) * 1000, digits),
            "p99": round(percentile(samples, 0.99) * 1000, digits), "max": round(max(samples) * 1000, digits), "n": len(samples)}


def ratio(ours, peer, digits=2):
    return round(ours / peer, digits) if ours is not None and peer else None


async def alternating_calls(sides, count, warmup, rounds=10):
    """{name: (seconds of each timed call, failed calls)}. `sides` maps a name to `call(i)`, which
    makes the i-th call and returns True when it failed. Each side makes `warmup` untimed calls,
    then `count` timed ones in `rounds` turns that alternate between the sides: a shared machine's
    speed changes within seconds, and a side timed in one block would see another machine than
    its peer timed in the next one."""
    for call in sides.values():
        for i in range(warmup):
            await call(i)
    results = {name: ([], 0) for name in sides}
    per_round = -(-count // rounds)
    for first in range(0, count, per_round):
        for name, call in sides.items():
            samples, failed = results[name]
            for i in range(first, min(count, first + per_round)):
                started = time.perf_counter()
                failed += bool(await call(warmup + i))
                samples.append(time.perf_counter() - started)
            results[name] = samples, failed
    return results


def mib(memory):
    """"before/peak/after" in MiB of a Memory.report()."""
    return "/".join(f"{(memory[k] or 0) / 1024:.0f}" for k in ("beforeKiB", "peakKiB", "afterKiB"))


def row(metric, value, peer=None, *, ratio_of=True, target=None, met=None):
    """One line of the report table (`python -m bench` prints them): our value, the peer's and ours/peer."""
    line = {"metric": metric, "value": value}
    if peer is not None:
        line["peer"] = peer
        if ratio_of and isinstance(value, (int, float)) and isinstance(peer, (int, float)):
            line["ratio"] = ratio(value, peer)
    if target is not None:
        line["target"] = target
        line["met"] = bool(met)
    return line


def print_rows(rows, metric_width=28, value_width=14):
    """The rows as the console table a benchmark prints while it runs."""
    for line in rows:
        print(f"  {line['metric']:<{metric_width}} {line['value']!s:>{value_width}} {line.get('peer', '')!s:>{value_width}} "
              f"{line.get('ratio', '')!s:>7}")


# -- processes ---------------------------------------------------------------------------------

def raise_open_files(wanted):
    """Raise this process's soft open-files limit towards `wanted` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Child:
    """A child process of the bench, its output in a log file (an unread pipe would block a chatty
    child), optionally listening on `port`; with its resident memory."""

    def __init__(self, args, env, log_path, port=None, timeout=60):
        self.port = port
        self.url = f"http://{HOST}:{port}" if port else None
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen([PYTHON, *map(str, args)], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                        stdout=self.log, stderr=subprocess.STDOUT)
        if port:
            try:
                wait_for_port(port, self.process, timeout, log_path)
            except BaseException:
                self.stop()
                raise

    @classmethod
    def daphne(cls, app, env, log_path):
        """daphne as `python -m daphne` starts it (asyncio's own loop): the peers as the issue measured them."""
        port = free_port()
        return cls(["-m", "daphne", "-b", HOST, "-p", port, app], env, log_path, port)

    @classmethod
    def backflow_daphne(cls, app, env, log_path):
        """daphne as `make run` starts it (backflow.serve_daphne: on uvloop): ours, and the floors
        that measure our design on our server."""
        port = free_port()
        return cls(["-m", "backflow.serve_daphne", "-b", HOST, "-p", port, app], env, log_path, port)

    @classmethod
    def uvicorn(cls, app, env, log_path):
        port = free_port()
        return cls(["-m", "uvicorn", app, "--host", HOST, "--port", port, "--log-level", "warning", "--no-access-log",
                    "--lifespan", "off"], env, log_path, port)

    @classmethod
    def backflow_uvicorn(cls, env, log_path):
        """Backflow as `make run SERVER=uvicorn` serves it (backflow.serve_uvicorn)."""
        port = free_port()
        return cls(["-m", "backflow.serve_uvicorn", "--host", HOST, "--port", port], env, log_path, port)

    @classmethod
    def peer_uvicorn(cls, app, env, log_path):
        """A peer on uvicorn as backflow.serve_uvicorn runs ours (uvloop, h11, access log on)."""
        port = free_port()
        return cls(["-m", "uvicorn", app, "--host", HOST, "--port", port, "--loop", "uvloop", "--http", "h11",
                    "--lifespan", "off", "--no-proxy-headers"], env, log_path, port)

    @classmethod
    def manage(cls, env, log_path, *args):
        return cls([ROOT / "manage.py", *args], env, log_path)

    @property
    def pid(self):
        return self.process.pid

    def _status(self, field):
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise RuntimeError(f"no {field} for {self.pid}")

    def rss_kib(self):
        return self._status("VmRSS")

    def cpu_seconds(self):
        """User + system CPU time of the process (all its threads) so far."""
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait_idle(self, timeout=30, interval=0.25, busy=0.1):
        """Wait until the process has started up: twice in a row under `busy` of a CPU over `interval`."""
        deadline = time.monotonic() + timeout
        quiet, last = 0, self.cpu_seconds()
        while quiet < 2 and time.monotonic() < deadline:
            time.sleep(interval)
            if not self.alive():
                raise RuntimeError(f"{' '.join(map(str, self.process.args[:4]))} exited: {self.output(1500)}")
            now = self.cpu_seconds()
            quiet = quiet + 1 if now - last < busy * interval else 0
            last = now
        return quiet >= 2

    def reset_peak(self):
        """Start the peak-RSS mark (VmHWM) from now; False where the kernel does not allow it."""
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as refs:
                refs.write("5")
            return True
        except OSError:
            return False

    def peak_kib(self):
        return self._status("VmHWM")

    def output(self, chars=4000):
        return Path(self.log_path).read_text(errors="replace")[-chars:]

    def alive(self):
        return self.process.poll() is None

    def stop(self, timeout=10):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def stop_all(children):
    for child in reversed(children):
        try:
            child.stop()
        except Exception as exc:  # keep stopping the others
            print(f"could not stop {child.process.args[:4]}: {exc}", file=sys.stderr)


class Memory:
    """RSS of one child around a load: before, peak during (VmHWM reset at the start; sampled every
    0.1 s where the kernel does not allow the reset), and after (once the load has ended); and the
    CPU time the child used during the load (all rounds of it)."""

    def __init__(self, child):
        self.child = child
        self.samples = []
        self.before = self.peak = self.after = None
        self.cpu = 0.0
        self._cpu_start = None

    def start(self):
        """Start (or, for a load in several rounds, resume) the watch; `before` is the first start's."""
        rss = self.child.rss_kib()
        if self.before is None:
            self.before = rss
        self._exact = self.child.reset_peak()
        self.samples = [rss]
        self._cpu_start = self.child.cpu_seconds()

    def sample(self):
        if self.child.alive():
            self.samples.append(self.child.rss_kib())

    def stop(self):
        self.sample()
        if self._cpu_start is not None and self.child.alive():
            self.cpu += self.child.cpu_seconds() - self._cpu_start
            self._cpu_start = None
        self.peak = max(self.peak or 0, *self.samples)
        if self._exact and self.child.alive():
            self.peak = max(self.peak, self.child.peak_kib())

    def settle(self, seconds=1.0):
        time.sleep(seconds)
        self.after = self.child.rss_kib() if self.child.alive() else None

    def report(self, per=None):
        result = {"beforeKiB": self.before, "peakKiB": self.peak, "afterKiB": self.after, "cpuSeconds": round(self.cpu, 2)}
        if per:
            result["perItemKiB"] = round((self.peak - self.before) / per, 1)
        return result


async def sample_memory(memories, stop_event, interval=0.1):
    """Sample each Memory every `interval` seconds until `stop_event` (an asyncio.Event) is set."""
    while not stop_event.is_set():
        for memory in memories:
            memory.sample()
        try:
            await asyncio.wait_for(stop_event.wait(), interval)
        except TimeoutError:
            pass


# -- the platform ------------------------------------------------------------------------------

def platform_env(database_url, redis_url=None, **overrides):
    """Environment of a Backflow child on `database_url` (and Redis when given), limits lifted."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DEBUG", "LOG_LEVEL")}
    env.update(DATABASE_URL=database_url, LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1", DJANGO_SETTINGS_MODULE="backflow.settings",
               **LIFTED_LIMITS)
    if redis_url:
        env["REDIS_URL"] = redis_url
    if not (ROOT / "var" / "local.env").exists():  # no `make` yet: throw-away keys for this run
        env.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
        env.setdefault("BACKFLOW_SECRETS_KEY", base64.urlsafe_b64encode(os.urandom(32)).decode())
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def peer_env(**overrides):
    """Environment of a peer child: no Django settings."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(PYTHONUNBUFFERED="1", **{k: str(v) for k, v in overrides.items()})
    return env


def manage(env, *args, timeout=120):
    done = subprocess.run([PYTHON, str(ROOT / "manage.py"), *map(str, args)], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(map(str, args))} failed: {done.stderr[-2000:]}")
    return done.stdout.strip()


def create_platform(env, tenant="bench"):
    """Migrate the database of `env`, create a tenant and an API key for it; returns the key."""
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "create_tenant", tenant, "--name", tenant.title())
    return manage(env, "create_api_key", tenant, "--name", "bench").splitlines()[-1].strip()


class PostgresDatabase:
    """A database created for the run on the Postgres server of `server_url` and dropped after."""

    def __init__(self, server_url, name):
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(server_url)
        self.admin_url = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
        self.name = name
        self.url = urlunsplit(parts._replace(path=f"/{name}"))

    def __enter__(self):
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{self.name}"')
        return self

    def __exit__(self, *exc):
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


# -- the production profile --------------------------------------------------------------------

PRODUCTION = " [pg+redis]"  # the suffix of the production profile's rows
UVICORN = " [uvicorn]"  # the suffix of the rows of ours served by `make run SERVER=uvicorn` (Child.backflow_uvicorn)


def redis_database(url, db=REDIS_DB):
    """`url` (a Redis server) with the benchmark's own database number instead of the one it names."""
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(url)._replace(path=f"/{db}", query=""))


def production_profile(environ=None):
    """(Postgres server URL, Redis URL, None) when DATABASE_URL (postgres://...) and REDIS_URL are
    set (in the environment of `make bench`) and both servers answer; (None, None, why not) otherwise.

    The production profile runs ours as deployed, on Postgres and Redis (cache, channel layer, rate
    limits), but never on the databases those URLs name: on a throw-away database made on that
    Postgres server (`production_stores`, dropped after) and on the benchmark's own database of
    that Redis server (REDIS_DB: it must be empty, and is emptied after)."""
    from urllib.parse import urlsplit

    environ = os.environ if environ is None else environ
    database, redis_url = environ.get("DATABASE_URL", ""), environ.get("REDIS_URL", "")
    missing = [name for name, value in (("DATABASE_URL", database), ("REDIS_URL", redis_url)) if not value]
    if missing:
        return None, None, (f"production profile ({PRODUCTION.strip()}) skipped: {' and '.join(missing)} not set "
                            "(DATABASE_URL=postgres://... REDIS_URL=redis://... make bench runs it)")
    if urlsplit(database).scheme not in ("postgres", "postgresql"):
        return None, None, f"production profile skipped: DATABASE_URL is not a postgres:// URL ({urlsplit(database).scheme}://)"
    bench_redis = redis_database(redis_url)
    ok, note = redis_available(bench_redis)
    if not ok:
        return None, None, f"production profile skipped: {note}"
    try:
        import psycopg

        psycopg.connect(PostgresDatabase(database, "postgres").admin_url, connect_timeout=5).close()
    except Exception as exc:
        return None, None, f"production profile skipped: Postgres not reachable ({exc.__class__.__name__}: {' '.join(str(exc).split())[:200]})"
    return database, bench_redis, None


@contextlib.contextmanager
def production_stores(database_server, redis_url):
    """The URL of a throw-away database made on the Postgres server `database_server` (dropped
    after); the benchmark's Redis database `redis_url` is emptied after, too."""
    try:
        with PostgresDatabase(database_server, f"backflow_bench_{secrets.token_hex(4)}") as database:
            yield database.url
    finally:
        redis_clean(redis_url)


# -- Redis -------------------------------------------------------------------------------------

def redis_available(url=REDIS_URL):
    """True when Redis answers at `url` and its database is empty (ours for the run); why not otherwise."""
    try:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        keys = client.dbsize()
        client.close()
    except Exception as exc:
        return False, f"Redis not reachable at {url}: {exc.__class__.__name__}"
    if keys:
        return False, f"Redis database {url} holds {keys} keys that are not the benchmark's; left alone"
    return True, url


def redis_clean(url=REDIS_URL):
    """Empty the benchmark's Redis database (it was empty before the run)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        client.flushdb()
    finally:
        client.close()


# -- the local upstream (uvicorn loads `bench.support:upstream_app`) ---------------------------

UPSTREAM_BODY = json.dumps({"items": [{"id": i, "name": f"item {i}"} for i in range(5)]}).encode()


async def upstream_app(scope, receive, send):
    """A fast fixed JSON answer."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(UPSTREAM_BODY)).encode())]})
    await send({"type": "http.response.body", "body": UPSTREAM_BODY})


# -- the peer MCP server: the SDK's own server, served by daphne as `bench.support:peer_app` -----

# BENCH_PEER_TOOLS (JSON {"list_integrations": {...}, "get_integration": {name: {...}}}) gives the
# peer's list_integrations / get_integration the same answers as ours, so both send the same bytes.
# BENCH_PEER_TOOL_LIST (a JSON file of ours' tools/list entries) makes the peer list ours' tools, with
# their output schemas, instead of its own three: the SDK's ClientSession compiles a validator for the
# output schema of each tool it calls, once per session (about 2 ms of the client's CPU for
# list_integrations', 0.8 for get_integration's), a cost of the tool definitions that any server
# listing them puts on its clients, not of the server's code.
DEFAULT_PEER_DATA = {"list_integrations": {"integrations": []}, "get_integration": {}}


def tool_entries(listed):
    """The tools/list entries of `listed` (a ListToolsResult), as JSON values."""
    return [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in listed.tools]


def write_tool_list(listed, path):
    """Write the tools of `listed` (a ListToolsResult from ours) to `path` as BENCH_PEER_TOOL_LIST
    wants them; `path`."""
    path.write_text(json.dumps(tool_entries(listed)))
    return path


class DesignFloor:
    """With BENCH_PEER_DATABASE (ours' SQLite file, or with [pg+redis] the postgres:// URL of ours'
    database) the peer also does, in its cheapest form, the database work the design keeps per
    message: each POSTed message reads the tenant row (the version the verified-key cache checks)
    and each tool call reads what the tool answers (the named integration, or the tenant's list)
    and writes its audit event (one INSERT), each on a thread of a pool with its own sqlite3 or
    psycopg connection (autocommit), no ORM. No rate-limit count: on PostgreSQL a lower bound of
    the design, which counts in Redis too. The answers stay the recorded ones. What ours costs
    above this peer is our own code (bench/load_mcp.py, `peer_design_floor` and
    `peer_design_floor_production`)."""

    AUDIT = ("INSERT INTO tenants_auditevent (tenant_id, principal, action, object_type, object_id, summary, created_at, "
             "request_id) VALUES (?, 'key:bench', 'mcp.tool_call', 'tool', ?, ?, ?, '')")

    def __init__(self, database, slug):
        self.database = database
        self.on_postgres = database.startswith(("postgres://", "postgresql://"))
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="design-floor")
        self.local = threading.local()
        self.tenant_id = self._execute("SELECT id FROM tenants_tenant WHERE slug = ?", (slug,)).fetchone()[0]

    def _execute(self, sql, params):
        connection = getattr(self.local, "connection", None)
        if connection is None:
            if self.on_postgres:
                import psycopg

                connection = psycopg.connect(self.database, autocommit=True)
            else:
                connection = sqlite3.connect(self.database, isolation_level=None, timeout=20)
            self.local.connection = connection
        return connection.execute(sql.replace("?", "%s") if self.on_postgres else sql, params)

    def _tenant_row(self):
        return self._execute("SELECT * FROM tenants_tenant WHERE id = ?", (self.tenant_id,)).fetchone()

    def _tool_call(self, name, arguments):
        if name == "get_integration":
            self._execute("SELECT * FROM integrations_app_integration WHERE tenant_id = ? AND name = ?",
                          (self.tenant_id, str(arguments.get("name")))).fetchone()
        else:
            self._execute("SELECT * FROM integrations_app_integration WHERE tenant_id = ? ORDER BY name",
                          (self.tenant_id,)).fetchall()
        summary = json.dumps({"outcome": "ok", "arguments": sorted(arguments), "target": {}})
        self._execute(self.AUDIT, (self.tenant_id, name, summary, datetime.now(timezone.utc).isoformat()))

    async def message(self):
        await asyncio.get_running_loop().run_in_executor(self.pool, self._tenant_row)

    async def tool_call(self, name, arguments):
        await asyncio.get_running_loop().run_in_executor(self.pool, self._tool_call, name, arguments)


def _design_floor():
    database = os.environ.get("BENCH_PEER_DATABASE")
    return DesignFloor(database, os.environ.get("BENCH_PEER_TENANT", "bench")) if database else None


def _peer_server(floor=None):
    import mcp_types as types
    from mcp.server import Server

    data = json.loads(os.environ.get("BENCH_PEER_TOOLS") or "null") or DEFAULT_PEER_DATA
    any_object = {"type": "object", "properties": {}}
    listed = os.environ.get("BENCH_PEER_TOOL_LIST")
    tools = [types.Tool.model_validate(entry) for entry in json.loads(Path(listed).read_text())] if listed else [
        types.Tool(name="echo", title="Echo", description="Return the text.",
                   input_schema={"type": "object", "properties": {"text": {"type": "string"}}}),
        types.Tool(name="list_integrations", description="A fixed list.", input_schema=any_object),
        types.Tool(name="get_integration", description="A fixed document by name.",
                   input_schema={"type": "object", "properties": {"name": {"type": "string"}}}),
    ]

    async def on_list_tools(ctx, params):
        return types.ListToolsResult(tools=tools)

    async def on_call_tool(ctx, params):
        arguments = params.arguments or {}
        if floor is not None:
            await floor.tool_call(params.name, arguments)
        if params.name == "list_integrations":
            value = data["list_integrations"]
        elif params.name == "get_integration":
            value = data["get_integration"].get(arguments.get("name"), {"name": arguments.get("name")})
        else:
            value = {"text": arguments.get("text", "")}
        return types.CallToolResult(content=[types.TextContent(text=json.dumps(value))], structured_content=value)

    return Server("peer", version="1.0.0", on_list_tools=on_list_tools, on_call_tool=on_call_tool)


class PeerApp:
    """/sse + /messages/ (the SDK's SseServerTransport) and /mcp (StreamableHTTPSessionManager,
    stateless like ours), one ASGI app."""

    def __init__(self):
        from mcp.server.sse import SseServerTransport
        from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

        self.floor = _design_floor()
        self.server = _peer_server(self.floor)
        self.sse = SseServerTransport("/messages/")
        self.manager = StreamableHTTPSessionManager(app=self.server, stateless=True)
        self._ready = None

    async def _run_manager(self):
        async with self.manager.run():
            self._ready.set()
            await asyncio.Event().wait()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":  # daphne sends no lifespan events
            return
        path = scope["path"]
        if path == "/sse":
            async with self.sse.connect_sse(scope, receive, send) as (read, write):
                await self.server.run(read, write, self.server.create_initialization_options())
        elif path.startswith("/messages"):
            if self.floor is not None:
                await self.floor.message()
            await self.sse.handle_post_message(scope, receive, send)
        elif path.rstrip("/") == "/mcp":
            if self._ready is None:
                self._ready = asyncio.Event()
                self._runner = asyncio.get_running_loop().create_task(self._run_manager())
            await self._ready.wait()
            if self.floor is not None and scope["method"] == "POST":
                await self.floor.message()
            await self.manager.handle_request(scope, receive, send)
        else:
            await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"not found"})


_peer_app = None


def __getattr__(name):  # `peer_app` is built on first use (daphne's import), not on every import
    global _peer_app
    if name == "peer_app":
        if _peer_app is None:
            _peer_app = PeerApp()
        return _peer_app
    raise AttributeError(name)


# -- a light HTTP/1.1 load client --------------------------------------------------------------

class KeepAliveClient:
    """One keep-alive HTTP/1.1 connection doing GETs: asyncio streams and a few lines of parsing,
    so the load generator (sharing the CPUs with the servers) spends little time per request."""

    def __init__(self, url, headers=None):
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
        self.request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self.reader = self.writer = None

    async def _connect(self):
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def get(self):
        """(status, body) of one GET; reconnects when the server closed the connection."""
        if self.writer is None:
            await self._connect()
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        fields = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if "content-length" in fields:
            body = await self.reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if not size:
                    break
                chunks.append(chunk[:-2])
            body = b"".join(chunks)
        else:
            body = await self.reader.read()
            await self.close()
        if fields.get("connection", "").lower() == "close":
            await self.close()
        return status, body

    async def close(self):
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
            self.reader = self.writer = None


async def http_load(url, headers, clients, seconds, warmup=1.0, expect=200, memories=(), keep_samples=None):
    """`clients` keep-alive connections GET `url` as fast as answers come for `seconds` (after
    `warmup` seconds not counted): latencies, errors and throughput; samples `memories` meanwhile.
    The latencies (s) are also appended to `keep_samples` when given (to pool several rounds)."""
    connections = [KeepAliveClient(url, headers) for _ in range(clients)]
    latencies, failures = [], []
    errors = [0]
    phase = {"measure": False}

    async def worker(client, stop_at):
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            try:
                status, body = await client.get()
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
                status, body = None, f"{exc.__class__.__name__}: {exc}".encode()
                await client.close()
            if not phase["measure"]:
                continue
            latencies.append(time.perf_counter() - started)
            if status != expect:
                errors[0] += 1
                if len(failures) < 5:
                    failures.append(f"{status}: {body[:200].decode(errors='replace')}")

    stop_sampling = asyncio.Event()
    sampler = asyncio.get_running_loop().create_task(sample_memory(memories, stop_sampling)) if memories else None
    try:
        warm_until = time.perf_counter() + warmup
        await asyncio.gather(*(worker(c, warm_until) for c in connections))
        for memory in memories:
            memory.start()
        phase["measure"] = True
        started = time.perf_counter()
        await asyncio.gather(*(worker(c, started + seconds) for c in connections))
        elapsed = time.perf_counter() - started
    finally:
        stop_sampling.set()
        if sampler:
            await sampler
        for memory in memories:
            if memory.before is not None:
                memory.stop()
        for client in connections:
            await client.close()
    if keep_samples is not None:
        keep_samples.extend(latencies)
    result = {"clients": clients, "seconds": round(elapsed, 2), "requests": len(latencies), "errors": errors[0],
              "perSecond": round((len(latencies) - errors[0]) / elapsed, 1), "latencyMs": latency_ms(latencies)}
    if failures:
        result["firstFailures"] = failures
    return result
