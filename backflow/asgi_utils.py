"""Small helpers for the raw ASGI apps mounted beside Django (MCP transports, tenant routes)."""

import json
import logging
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.http.request import split_domain_port, validate_host

from backflow import metrics
from backflow.derived import PerSetting
from backflow.outages import RETRY_AFTER_SECONDS, describe, outage_message

logger = logging.getLogger("backflow.asgi")
NUL_IN_PATH = "The path contains a NUL character (%00): nothing is named that way; remove it."


class HttpError(Exception):
    def __init__(self, status, message, headers=(), **extra):
        super().__init__(message)
        self.status, self.message, self.headers, self.extra = status, message, list(headers), extra

    def body(self):
        return {"error": self.message, **self.extra}


async def respond(send, status, body, headers=(), content_type=b"application/json"):
    payload = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False, default=str).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(payload)).encode()), *headers]})
    await send({"type": "http.response.body", "body": payload})


def request_headers(scope):
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}


def query_params(scope):
    """First value of each query parameter."""
    return {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True).items()}


def check_host(headers):
    """DNS-rebinding protection: Host (and Origin, when sent) must be one of ALLOWED_HOSTS.

    `Origin: null` is refused like any other foreign origin: browsers send it from sandboxed
    iframes, data: and file: documents and after cross-origin redirects, none of which is this
    site. Clients that are not browsers send no Origin at all."""
    if not _host_allowed(headers.get("host", "")):
        raise HttpError(421, f"Host {headers.get('host', '')!r} is not allowed.")
    origin = headers.get("origin")
    if origin is not None and origin.strip():  # an empty header says nothing (browsers never send one)
        try:
            origin_host = urlsplit(origin.strip()).hostname or ""
        except ValueError:  # e.g. an unclosed IPv6 bracket
            origin_host = ""
        if not origin_host or not validate_host(origin_host, settings.ALLOWED_HOSTS):
            raise HttpError(403, f"Origin {origin!r} is not allowed.")


# Host header values found allowed under ALLOWED_HOSTS as it is (another setting starts over):
# Django's split and match cost a routed request ~15 us of the loop's CPU for the same one or two
# values each time. A wildcard entry allows any number of names: past the bound, the others are
# checked each time.
_allowed_hosts = PerSetting("ALLOWED_HOSTS", lambda setting: set())
_REMEMBERED_HOSTS = 256


def _host_allowed(value):
    values = _allowed_hosts.get()
    if value in values:
        return True
    host, _ = split_domain_port(value)
    allowed = bool(host) and validate_host(host, settings.ALLOWED_HOSTS)
    if allowed and len(values) < _REMEMBERED_HOSTS:
        values.add(value)
    return allowed


async def read_body(receive, limit):
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HttpError(400, "The client went away before sending the body.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"Request body is larger than {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


class BoundedBody:
    """Django's ASGI handler reads a request's whole body before any view or middleware runs,
    past 2.5 MB into a temporary file: the 1 MiB limit (DATA_UPLOAD_MAX_MEMORY_SIZE) was applied
    only after a caller, key or not, had written all of it to the server's disk (an outside attacker
    sent 100 MB and 300 MB). Requests for Django are refused with 413 past the limit (plus room for
    a multipart form's framing): at once when Content-Length says so, else as soon as the bytes
    read pass it (the handler then sees the client go away, and this answers)."""

    FRAMING = 64 * 1024

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if scope["type"] != "http" or limit is None:
            return await self.app(scope, receive, send)
        limit += self.FRAMING
        declared = next((value for name, value in scope["headers"] if name == b"content-length"), b"")
        if declared.isdigit() and int(declared) > limit:
            return await _too_large(send, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        read, over, started = 0, False, False

        async def counting():
            nonlocal read, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > limit:
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def tracking(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counting, tracking)
        if over and not started:
            await _too_large(send, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)


async def _too_large(send, limit):
    await respond(send, 413, {"detail": f"Request body is larger than {limit} bytes.", "errors": {"body": ["Send a smaller body."]}},
                  [(b"connection", b"close")])


class PathRouter:
    """ASGI app: requests whose path starts with a mounted prefix go to that app, the rest to Django."""

    def __init__(self, default_app, mounts):
        self.default_app = default_app
        self.mounts = list(mounts.items())

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            path = scope.get("path", "")
            for prefix, app in self.mounts:
                if path == prefix.rstrip("/") or path.startswith(prefix):
                    if "\x00" in path:  # as backflow.api_errors.refuse_nul_in_path does for Django's views
                        return await respond(send, 400, {"error": NUL_IN_PATH})
                    return await guarded(app, scope, receive, send)
        return await self.default_app(scope, receive, send)


async def guarded(app, scope, receive, send):
    """Run a raw ASGI app (MCP, tenant routes) so that no exception reaches daphne.

    Daphne answers an escaped exception with an HTML 500 page; worse, when the response had already
    started (an SSE stream), its once-a-second application checker raises on it and is never
    scheduled again: from then on no failing request is answered (each hangs until the client gives
    up) and closed connections are never reaped. So: an outage of the database or Redis becomes 503
    with Retry-After and a JSON error naming the service (logged as one line: not a bug); anything
    else a JSON 500 (logged with its traceback); a response already started is ended.
    """
    started = False

    async def tracking_send(message):
        nonlocal started
        if message["type"] == "http.response.start":
            started = True
            # Answers are JSON or event streams, never to be sniffed into something a browser runs.
            if not any(name.lower() == b"x-content-type-options" for name, _ in message.get("headers", ())):
                message = {**message, "headers": [*message.get("headers", ()), (b"x-content-type-options", b"nosniff")]}
        await send(message)

    try:
        await app(scope, receive, tracking_send)
    except Exception as exc:
        message = outage_message(exc)
        if message:
            logger.warning("%s %s: %s (%s)", scope.get("method"), scope.get("path"), message, describe(exc))
        else:
            logger.exception("%s %s failed", scope.get("method"), scope.get("path"))
        try:
            if started:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            elif message:
                metrics.outage(message)
                await respond(send, 503, {"error": message}, [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())])
            else:
                await respond(send, 500, {"error": "Internal error; the server logged the details."})
        except Exception:  # the client is gone, or the response was already complete
            pass
