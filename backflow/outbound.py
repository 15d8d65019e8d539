"""The integrations' client: aiohttp behind the egress guard (backflow.egress).

It speaks the vocabulary the runtime and its tests use with httpx, so either client serves:
`stream(method, url, params=, headers=, json=, data=, timeout=)` is an async context manager giving
a response with `status_code`, `headers` (a header sent on several lines reads as one value joined
by commas), `is_redirect`, `url` and `aiter_raw()` (the bytes as sent: bodies are decoded by
backflow.peer_bodies, never here). URLs and query strings are encoded by httpx's rules, JSON
bodies as httpx encodes them, and failures are httpx's exception classes (ConnectError, ReadError,
RemoteProtocolError, UnsupportedProtocol, InvalidURL; a timeout is a TimeoutError). No cookies
are kept: one client serves every tenant.

Its own module so that aiohttp (about 0.17 s of CPU to import) is loaded by the processes that
send (the servers import it at start, backflow.asgi) and not by every `manage.py` command or
`mcp_stdio` start: backflow.egress.shared_client imports it when it makes its first client.
"""

import contextlib
import functools
import json as jsonlib
import socket
from urllib.parse import urlencode

import aiohttp
import httpx
import yarl

from backflow.egress import EgressPolicy
from backflow.peer_bodies import ACCEPT_ENCODING

DEFAULT_TIMEOUT = 5.0  # seconds for connecting and for each read, httpx's default
MAX_CONNECTIONS = 200
KEEPALIVE_SECONDS = 30.0
MAX_HEADER_LINE = 16 * 1024  # the longest status or header line an upstream may send (h11's bound, as before)
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class GuardedConnector(aiohttp.TCPConnector):
    """A TCPConnector whose every host passes the egress policy: names, and IP literals too
    (aiohttp would connect to those without resolving them). Resolution is never cached."""

    def __init__(self, policy, **kwargs):
        super().__init__(use_dns_cache=False, **kwargs)
        self.policy = policy

    async def _resolve_host(self, host, port, traces=None):
        if self.policy.host_allowed(host):
            return await super()._resolve_host(host, port, traces)
        return [{"hostname": host, "host": str(address), "port": port,
                 "family": socket.AF_INET6 if address.version == 6 else socket.AF_INET, "proto": 0, "flags": 0}
                for address in await self.policy.resolve(host, port)]


class OutboundHeaders:
    """An answer's headers as httpx reads them: any case, several lines joined by ', '."""

    def __init__(self, headers):
        self._headers = headers

    def get(self, name, default=None):
        values = self._headers.getall(name, None)
        return ", ".join(values) if values else default

    def __getitem__(self, name):
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name):
        return name in self._headers


class OutboundResponse:
    def __init__(self, response):
        self._response = response
        self.status_code = response.status
        self.headers = OutboundHeaders(response.headers)
        self.url = str(response.url)

    @property
    def is_redirect(self):
        return self.status_code in REDIRECT_STATUSES and "location" in self.headers

    async def aiter_raw(self):
        with _as_httpx_errors():
            async for chunk in self._response.content.iter_any():
                yield chunk


@contextlib.contextmanager
def _as_httpx_errors():
    try:
        yield
    except TimeoutError:  # aiohttp's timeouts are TimeoutErrors already, as the runtime expects
        raise
    except (aiohttp.InvalidURL, ValueError) as exc:
        raise httpx.InvalidURL(str(exc)) from exc
    except aiohttp.ClientConnectorError as exc:
        raise httpx.ConnectError(str(exc)) from exc
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientResponseError) as exc:
        raise httpx.RemoteProtocolError(str(exc)) from exc
    except (aiohttp.ClientError, ConnectionError) as exc:
        raise httpx.ReadError(str(exc)) from exc


def _target(url, params):
    """The URL with `params` merged into its query, encoded as httpx encodes it."""
    if not params and len(url) <= _REMEMBERED_URL_LENGTH:
        return _remembered_target(url)
    return _encoded(httpx.URL(url).copy_merge_params(params) if params else httpx.URL(url))


def _encoded(target):
    if target.scheme not in ("http", "https"):
        raise httpx.UnsupportedProtocol(f"Request URL has an unsupported protocol '{target.scheme}://'.")
    return yarl.URL(str(target), encoded=True)


# Parsing and encoding a URL twice (httpx's rules, then yarl's URL) cost a route call about 5% of its
# CPU, for the same few URLs again and again: the last ones are remembered (immutable values; a
# URL that failed is parsed again each time, and refused again).
_REMEMBERED_URL_LENGTH = 2048


@functools.lru_cache(maxsize=1024)
def _remembered_target(url):
    return _encoded(httpx.URL(url))


def _body(headers, json, data):
    if json is not None:
        headers.setdefault("Content-Type", "application/json")
        return jsonlib.dumps(json, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    if data is not None:
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        return urlencode(data, doseq=True).encode()
    return None


class OutboundClient:
    def __init__(self, *, policy=None):
        connector = GuardedConnector(policy or EgressPolicy.from_settings(), limit=MAX_CONNECTIONS,
                                     keepalive_timeout=KEEPALIVE_SECONDS)
        self._session = aiohttp.ClientSession(
            connector=connector, trust_env=False, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
            max_line_size=MAX_HEADER_LINE, max_field_size=MAX_HEADER_LINE,
        )

    @contextlib.asynccontextmanager
    async def stream(self, method, url, *, params=None, headers=None, json=None, data=None, timeout=None):
        # Header values the runtime encoded to UTF-8 bytes go back to text: aiohttp writes UTF-8.
        sent = {name: value.decode() if isinstance(value, bytes) else value for name, value in (headers or {}).items()}
        if not any(name.lower() == "accept-encoding" for name in sent):
            sent["Accept-Encoding"] = ACCEPT_ENCODING  # only what peer_bodies decodes
        body = _body(sent, json, data)
        # Like httpx's timeout: a bound on connecting and on each read, not on the whole answer.
        per_phase = aiohttp.ClientTimeout(connect=timeout or DEFAULT_TIMEOUT, sock_read=timeout or DEFAULT_TIMEOUT)
        with _as_httpx_errors():  # not around the caller's block: its own errors stay its own
            response = await self._session.request(method, _target(url, params), headers=sent, data=body,
                                                   allow_redirects=False, timeout=per_phase)
        async with response:
            yield OutboundResponse(response)

    @property
    def closed(self):
        return self._session.closed

    async def aclose(self):
        await self._session.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        await self.aclose()

