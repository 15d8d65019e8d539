"""Real server processes for tests: daphne (the `make run` server) or uvicorn (`make run
SERVER=uvicorn`) on a free loopback port.

Children open the test database: on Postgres by name, on SQLite through the file the root
conftest puts it in. Tests that use them need `transactional_db` so their rows are committed.
"""

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, urlsplit
from uuid import uuid4

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_database_url():
    """DATABASE_URL of the database this test run uses (the test database, not the configured one)."""
    from django.db import connection  # here, so the benchmarks' bare peers import no Django with this module

    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        assert "memory" not in str(db["NAME"]), "child processes need the file-based SQLite test database (root conftest)"
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    auth = quote(db.get("USER") or "", safe="")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{auth + '@' if auth else ''}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{quote(db['NAME'], safe='')}"


def postgres_admin_url():
    """Where tests create private Postgres databases: the run's own server, else the local one
    (BACKFLOW_TEST_POSTGRES_URL overrides)."""
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.postgresql":
        auth = quote(db.get("USER") or "", safe="") + (":" + quote(db["PASSWORD"], safe="") if db.get("PASSWORD") else "")
        return f"postgres://{auth + '@' if auth else ''}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/postgres"
    return os.environ.get("BACKFLOW_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def postgres_url(admin, name, port=None):
    """`admin`'s server and credentials, database `name` (through 127.0.0.1:`port` if given)."""
    parts = urlsplit(admin)
    netloc = parts.netloc if port is None else f"{parts.netloc.rpartition('@')[0] + '@' if '@' in parts.netloc else ''}127.0.0.1:{port}"
    return f"{parts.scheme}://{netloc}/{name}?sslmode=disable"


@contextlib.contextmanager
def private_database(kind):
    """DATABASE_URL of a new, empty database of `kind` ("sqlite" or "postgres") for server
    children, dropped afterwards. Postgres needs a server that answers (skips the test if none)."""
    import pytest

    name = f"bf_private_{os.getpid()}_{uuid4().hex[:8]}"
    if kind == "sqlite":
        path = Path(tempfile.gettempdir()) / f"{name}.sqlite3"
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    psycopg = pytest.importorskip("psycopg")
    admin = postgres_admin_url()
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as db:
            db.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        pytest.skip(f"no Postgres to create a private database on ({urlsplit(admin).netloc}): {exc}".strip())
    try:
        yield postgres_url(admin, name)
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def manage(*args, env, timeout=180):
    """`manage.py ARGS` in a child with `env` over this run's environment; its stdout (asserts success)."""
    done = subprocess.run([sys.executable, "manage.py", *map(str, args)], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, (args, done.stderr[-3000:])
    return done.stdout


def child_env(**overrides):
    env = {**os.environ, "DATABASE_URL": child_database_url(), "PYTHONUNBUFFERED": "1"}
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def wait_for_port(port, process, timeout=30.0, log_path=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = Path(log_path).read_text(errors="replace")[-2000:] if log_path else ""
            raise RuntimeError(f"{' '.join(map(str, process.args[:5]))} exited early with {process.returncode}: {output}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout} s")


def stop_process(process, timeout=3):
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds. (daphne waits up to
    10 s for open streams to close before it exits: a test's server needs no such grace.)"""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class ServerProcess:
    """A child server of this project on a free loopback port, its output in a file (an unread
    pipe would block a chatty server once it fills); `args(port)` gives its command line."""

    def __init__(self, args, **env):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="server-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [sys.executable, *args(self.port)], cwd=ROOT, env=child_env(**env),
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, self.process, log_path=self.log.name)

    def output(self, tail=4000):
        """The end of what the server printed (all of it with tail=None)."""
        text = Path(self.log.name).read_text(errors="replace")
        return text[-tail:] if tail else text

    def stop(self):
        stop_process(self.process)
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


class Daphne(ServerProcess):
    """The `make run` server."""

    def __init__(self, **env):
        super().__init__(lambda port: ["-m", "backflow.serve_daphne", "-b", "127.0.0.1", "-p", str(port), "backflow.asgi:application"], **env)


class Uvicorn(ServerProcess):
    """`make run SERVER=uvicorn`'s server (backflow.serve_uvicorn)."""

    def __init__(self, **env):
        super().__init__(lambda port: ["-m", "backflow.serve_uvicorn", "--host", "127.0.0.1", "--port", str(port)], **env)
