"""Pieces the fault tests start and break on purpose (no tests here): a private redis-server, a
loopback TCP proxy that can cut its connections, a private Postgres database.

Each belongs to the test that made it and is stopped or dropped by that test's fixture; nothing
here touches a service the machine runs for others (the Redis on 6379, other databases).
"""

import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.live import free_port, stop_process

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def wait_until(condition, timeout=20.0, interval=0.05, message="the condition"):
    """Poll instead of sleeping a guessed time: a busy 2-CPU machine may be slow, never wrong."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} did not happen within {timeout} s")
        time.sleep(interval)


def redis_ping(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A redis-server of the test's own on a free loopback port: no persistence (a restart loses
    every key, like a crash of a cache-only Redis), its own directory and log."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None

    def start(self):
        """Start (or start again, on the same port)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        with open(self.directory / "redis.log", "ab") as log:
            self.process = subprocess.Popen(
                [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.directory), "--daemonize", "no"],
                cwd=self.directory, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        wait_until(lambda: self.process.poll() is not None or redis_ping(self.port), timeout=20, message="redis-server start")
        assert self.process.poll() is None, (self.directory / "redis.log").read_text(errors="replace")[-2000:]
        return self

    def stop(self):
        if self.process is not None:
            stop_process(self.process)


@pytest.fixture
def private_redis(tmp_path):
    """A started RedisServer of the test's own (skipped where there is no redis-server binary)."""
    if not Path(REDIS_SERVER).exists():
        pytest.skip(f"no redis-server binary ({REDIS_SERVER}) to run a private Redis")
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


class TcpProxy:
    """A loopback TCP proxy to `target` (host, port), run in threads.

    - `cut()`: close every proxied connection now (as a network failure or a server restart would);
      new connections are still accepted and forwarded.
    - `refuse()` / `accept()`: while refusing, every new connection is closed at once (the
      database is "down"); `accept()` ends the outage.
    - `cut_on(marker, after=None)`: the next client bytes containing `marker` (on a connection
      that sent `after` earlier) are not forwarded; instead every connection is cut and the proxy
      starts refusing. With Postgres' plain-text protocol this breaks a request deterministically
      in the middle of its transaction.
    """

    def __init__(self, target):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)  # accept() wakes up to notice close()
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.pairs = set()
        self.refusing = False
        self.marker = self.after = None
        self.tripped = threading.Event()
        self.accepted = 0
        self.closed = False
        self.thread = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)
        self.thread.start()

    def _accept_loop(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self.lock:
                refusing = self.refusing or self.closed
            if refusing:
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            pair = (client, server)
            with self.lock:
                self.pairs.add(pair)
                self.accepted += 1
            threading.Thread(target=self._pump, args=(client, server, pair, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, pair, False), daemon=True).start()

    def _pump(self, source, sink, pair, from_client):
        tail, after_seen = b"", False
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if from_client and self.marker is not None:
                    # A marker may straddle two reads: look at the end of the last one too.
                    window = tail + data
                    if self.marker in window and (after_seen or self.after is None or self.after in window.partition(self.marker)[0]):
                        self.marker = None
                        self.refuse()
                        self.cut()
                        self.tripped.set()
                        return
                    after_seen = after_seen or (self.after is not None and self.after in window)
                    tail = data[-256:]
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._close(pair)

    def _close(self, pair):
        with self.lock:
            self.pairs.discard(pair)
        for sock in pair:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def live(self):
        with self.lock:
            return len(self.pairs)

    def cut(self):
        with self.lock:
            pairs = list(self.pairs)
        for pair in pairs:
            self._close(pair)

    def refuse(self):
        with self.lock:
            self.refusing = True

    def accept(self):
        with self.lock:
            self.refusing = False

    def cut_on(self, marker, after=None):
        self.tripped.clear()
        self.after, self.marker = after, marker

    def close(self):
        self.closed = True
        self.listener.close()
        self.cut()
