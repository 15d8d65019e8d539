"""The event loop of Backflow's own long-running processes: uvloop unless BACKFLOW_EVENT_LOOP=asyncio.

The web process (backflow.serve_daphne, what `make run` starts) and `manage.py mcp_stdio` install
it before any loop is made; everything they run (Twisted's asyncio reactor, anyio, the
application) then runs on it. uvloop's loop is written in C: its timers, callbacks from threads
and sockets cost less CPU and latency than asyncio's (serve_daphne's docstring has the routes'
numbers; bench/mcp_stdio.py times stdio against the SDK floors on both loops).
"""

import asyncio
import os

EVENT_LOOPS = ("uvloop", "asyncio")
SETTING = "BACKFLOW_EVENT_LOOP"


def install_event_loop(choice=None):
    """Make `choice` (one of EVENT_LOOPS; by default the BACKFLOW_EVENT_LOOP variable, else uvloop)
    the loop of every loop asyncio makes from now on. An unknown choice stops the process with a
    message naming the two."""
    choice = os.environ.get(SETTING, "uvloop") if choice is None else choice
    if choice not in EVENT_LOOPS:
        raise SystemExit(f"{SETTING} is {choice!r}; use one of: {', '.join(EVENT_LOOPS)}.")
    if choice == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
