"""`make run`'s server: daphne started by backflow.serve_daphne, on uvloop unless
BACKFLOW_EVENT_LOOP=asyncio. Every live test runs on it (tests.live.Daphne); these check the loop
it picks, that `make run` starts it, and that it refuses a loop it does not know."""

import subprocess
import sys

import httpx

from tests.live import ROOT, ServerProcess, child_env

PROBE = "tests.loop_probe:application"


def served_on(**env):
    server = ServerProcess(lambda port: ["-m", "backflow.serve_daphne", "-b", "127.0.0.1", "-p", str(port), PROBE], **env)
    try:
        return httpx.get(f"{server.url}/", timeout=30, trust_env=False).text
    finally:
        server.stop()


def test_daphne_serves_on_uvloop_and_on_asyncio_when_asked():
    assert served_on() == "uvloop.Loop"
    assert served_on(BACKFLOW_EVENT_LOOP="asyncio") == "asyncio.unix_events._UnixSelectorEventLoop"


def test_an_unknown_event_loop_stops_the_server_at_start():
    started = subprocess.run([sys.executable, "-m", "backflow.serve_daphne", "-b", "127.0.0.1", "-p", "0", PROBE],
                             env=child_env(BACKFLOW_EVENT_LOOP="trio"), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert started.returncode != 0
    assert "BACKFLOW_EVENT_LOOP is 'trio'; use one of: uvloop, asyncio." in started.stderr


def test_make_run_starts_daphne_through_serve_daphne():
    planned = subprocess.run(["make", "-n", "run"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert planned.returncode == 0, planned.stderr
    assert "-m backflow.serve_daphne -b 127.0.0.1 -p 8000 backflow.asgi:application" in planned.stdout, planned.stdout
