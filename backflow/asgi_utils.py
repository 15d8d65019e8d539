"""Small helpers for the raw ASGI apps mounted beside Django (MCP transports, tenant routes)."""

import json
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.http.request import split_domain_port, validate_host


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
    """DNS-rebinding protection: Host (and Origin, when sent) must be one of ALLOWED_HOSTS."""
    host, _ = split_domain_port(headers.get("host", ""))
    if not host or not validate_host(host, settings.ALLOWED_HOSTS):
        raise HttpError(421, f"Host {headers.get('host', '')!r} is not allowed.")
    origin = headers.get("origin")
    if origin and origin != "null":
        origin_host = urlsplit(origin).hostname or ""
        if not validate_host(origin_host, settings.ALLOWED_HOSTS):
            raise HttpError(403, f"Origin {origin!r} is not allowed.")


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
                    return await app(scope, receive, send)
        return await self.default_app(scope, receive, send)
