"""The event loop of Backflow's processes (backflow.event_loop): uvloop unless
BACKFLOW_EVENT_LOOP=asyncio. `make run`'s server is daphne started by backflow.serve_daphne, and
every live test runs on it (tests.live.Daphne); these check the loop it picks, that `make run`
starts it, and that it and `mcp_stdio` refuse a loop they do not know."""

import asyncio
import subprocess
import sys

import httpx
import pytest
import uvloop

from backflow.event_loop import install_event_loop
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


def test_mcp_stdio_refuses_an_unknown_event_loop():
    started = subprocess.run([sys.executable, "manage.py", "mcp_stdio", "--tenant", "nobody"], env=child_env(BACKFLOW_EVENT_LOOP="trio"),
                             cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert started.returncode != 0
    assert "BACKFLOW_EVENT_LOOP is 'trio'; use one of: uvloop, asyncio." in started.stderr


@pytest.mark.parametrize(("choice", "loop_class"), [("uvloop", uvloop.Loop), ("asyncio", asyncio.SelectorEventLoop)])
def test_the_chosen_loop_is_the_one_asyncio_makes(choice, loop_class):
    policy = asyncio.get_event_loop_policy()
    try:
        install_event_loop(choice)
        loop = asyncio.new_event_loop()
        try:
            assert isinstance(loop, loop_class)
        finally:
            loop.close()
    finally:
        asyncio.set_event_loop_policy(policy)
