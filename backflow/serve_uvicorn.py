"""Serve Backflow with uvicorn on uvloop instead of daphne: the same ASGI application, a little less
CPU per request than daphne on uvloop (backflow.serve_daphne; bench/results/latest.md, the rows
marked [uvicorn]).

    .venv/bin/python -m backflow.serve_uvicorn [--host 127.0.0.1] [--port 8000] [--workers 1]
    make run SERVER=uvicorn

daphne stays what `make run` starts. The settings here are the tested ones (tests/test_uvicorn.py
runs daphne's own live tests against them); docs/operator-guide.md, "Serving with uvicorn", says
what differs and when to put a reverse proxy in front:
- h11, not httptools: httptools reads a request head of any size (a 200 MB header line grew the
  process to 300 MiB here); h11 refuses a head still incomplete past 16 KiB with a 400, so a head
  larger than one read of the socket delivers (at most a few hundred KiB) is refused;
- a request refused midway (a malformed chunked body) ends the application's side too;
- a connection that sends no complete request head goes idle for at most the keep-alive timeout
  (5 s), before its first request as between requests (uvicorn alone waits forever for a first
  request: a connection that never sends one was held for good);
- no proxy headers: which caller a request comes from is Backflow's decision alone
  (BACKFLOW_TRUSTED_PROXIES), uvicorn does not rewrite the client address;
- no lifespan (the application has none) and no WebSocket (no door speaks it);
- the access log through Django's LOGGING (LOG_FORMAT=json applies), credentials in the query
  redacted (backflow.access_log);
- open streams (SSE) get 10 s to finish at shutdown, as under daphne.
"""

import argparse

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

GRACEFUL_SHUTDOWN_SECONDS = 10


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with two gaps closed:
    - its keep-alive timer also runs while no request is in progress and its head is not complete:
      from the connection on, and again after each chunk of an unfinished head (each chunk stops
      the timer; a silent connection is closed);
    - a request it refuses midway (a malformed chunked body: it answers 400 and closes) ends the
      application's side too: the application's answer is dropped, as for a client that went away,
      instead of being written into the closed exchange (a traceback and a false access line per
      malformed request, which any caller could send)."""

    def connection_made(self, transport):
        super().connection_made(transport)
        self._idle_again()

    def data_received(self, data):
        super().data_received(data)
        if self.cycle is None or self.cycle.response_complete:
            self._idle_again()

    def send_400_response(self, msg):
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        super().send_400_response(msg)

    def _idle_again(self):
        if self.timeout_keep_alive_task is None and not self.transport.is_closing():
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m backflow.serve_uvicorn", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1,
                        help="processes; more than one needs REDIS_URL, as several daphnes do (docs/operator-guide.md)")
    args = parser.parse_args(argv)
    uvicorn.run(
        "backflow.asgi:application", host=args.host, port=args.port, workers=args.workers,
        loop="uvloop", http="backflow.serve_uvicorn:GuardedH11Protocol", ws="none", lifespan="off", proxy_headers=False,
        log_config=None,  # Django's LOGGING, set up when the application is loaded
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )


if __name__ == "__main__":
    main()
