"""Serve Backflow with daphne (what `make run` starts) on uvloop's event loop.

    .venv/bin/python -m backflow.serve_daphne -b 127.0.0.1 -p 8000 backflow.asgi:application

The arguments are daphne's own (`daphne --help`): this only chooses the event loop first. daphne
runs the application on Twisted's asyncio reactor, over the loop asyncio makes when daphne.server
is imported; with uvloop's policy installed before that import, the reactor and the application
run on uvloop (Twisted supports it since 21.7). A routed request's CPU at 50 clients dropped by a
fifth to a quarter (0.76-0.87 -> 0.60-0.66 ms, 1,190-1,355 -> 1,570-1,715 requests/s, in three runs
alternating the two loops), since the application's own work — timers, futures of pool threads,
the outbound client's sockets — runs on the loop, and uvloop's is in C. Nothing else differs: the
same daphne, protocol and options.

BACKFLOW_EVENT_LOOP=asyncio keeps asyncio's own loop (plain `daphne …` serves the same way).
"""

import sys

from backflow.event_loop import install_event_loop


def main(argv=None):
    install_event_loop()
    from daphne.cli import CommandLineInterface  # imports daphne.server, which makes the reactor's loop: after the policy

    CommandLineInterface().run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
