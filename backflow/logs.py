"""Request ids, and log records that carry them.

Every request gets an id (`X-Request-ID`): the one a trusted proxy sent (BACKFLOW_TRUSTED_PROXIES
> 0 and a well-formed value), else a new one. It is answered back, put on each log line written
while the request is handled, stored on the audit rows, route invocations and runs the request
makes (their `request_id` field defaults to it), sent upstream on integration calls, and carried
by a queued run into the worker that executes it. The id lives in a context variable, which
asgiref copies into the threads that do a request's database work.
"""

import contextvars
import json
import logging
import os
import re
import time
from datetime import datetime, timezone

from django.conf import settings

REQUEST_ID = contextvars.ContextVar("backflow_request_id", default="")
HEADER = "X-Request-ID"
# What a proxy may hand on: header-safe and log-safe (no spaces, quotes or control characters);
# room for nginx's $request_id, UUIDs and trace ids such as AWS's Root=1-…;Parent=….
WELL_FORMED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:;=+/@-]{0,127}")


def current_request_id():
    """The id of the request (or run) being handled, "" outside one. Also the default of the
    `request_id` fields, so every row made while handling a request carries it."""
    return REQUEST_ID.get()


def new_request_id():
    """32 hex digits: the time in milliseconds (12), then 80 random bits (20), as a UUIDv7 orders
    them. Ids made one after the other sort together, so the indexes on `request_id` (route
    invocations, audit events, runs) take a batch's new ids on one page instead of one page each:
    a random id cost SQLite's insert of a route invocation 30 us of CPU a row, an ordered one 11."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def incoming_request_id(value):
    """The id to use for a request that carried `value` in X-Request-ID (None: it sent none)."""
    if value and settings.BACKFLOW_TRUSTED_PROXIES > 0 and WELL_FORMED.fullmatch(value):
        return value
    return new_request_id()


class request_id_bound:  # noqa: N801  (used as `with request_id_bound(id):`, like contextlib's own)
    """`request_id` is the current request's id inside the block (a class rather than a generator
    context manager: it is entered on every request)."""

    __slots__ = ("request_id", "_token")

    def __init__(self, request_id):
        self.request_id = request_id

    def __enter__(self):
        self._token = REQUEST_ID.set(self.request_id)
        return self.request_id

    def __exit__(self, *exc_info):
        REQUEST_ID.reset(self._token)


class RequestIdFilter(logging.Filter):
    """Puts `request_id` on every record ("-" outside a request), for the formats to show."""

    def filter(self, record):
        record.request_id = REQUEST_ID.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """LOG_FORMAT=json: one JSON object per line, with the plain format's fields."""

    def format(self, record):
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)
