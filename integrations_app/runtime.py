"""Run a route: call each action's integration endpoint and shape the answer.

Actions run in waves: an action waits only for the earlier actions its params name through
{{steps.<id>…}}; actions of one wave run concurrently. A single-placeholder value keeps its JSON
type. Endpoint templates see the action's params as {{params.x}}; `{x}` in an endpoint path is
filled the same way; params no template uses go to the query string (GET, HEAD, OPTIONS,
DELETE) or become the JSON body (other methods, when the endpoint defines no body).

Every template is the document's own text, rendered once (backflow.templating): a caller's
value is inserted as a value, percent-encoded as one segment in a path, and refused in a header
when it holds a line break. `{{env.NAME}}` resolves only in local mode (`SecretResolver.env`).
"""

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin

import httpx
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured

from backflow import metrics
from backflow.egress import EgressRefused, lookups_for
from backflow.errors import InvalidInput, LoopDetected, NotFound
from backflow.jsonbody import JsonBodyError, parse_peer_json
from backflow.logs import HEADER as REQUEST_ID_HEADER
from backflow.logs import current_request_id
from backflow.outages import redis_errors
from backflow.peer_bodies import ACCEPT_ENCODING, PeerBodyError, PeerBodyTooLarge, read_body
from backflow.redaction import preview, scrub
from backflow.templating import EmptyPathValue, TemplateError, expressions, placeholder_names, render, render_path
from integrations_app.documents import HEADER_UNSAFE

logger = logging.getLogger("backflow.routes")

PATH_PARAM = re.compile(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)\}(?!\})")
IDEMPOTENT = {"get", "head", "options", "put", "delete"}
RETRY_STATUSES = {502, 503, 504}
QUERY_METHODS = {"get", "head", "options", "delete"}
DEFAULT_TIMEOUT = 10.0
MAX_REDIRECTS = 5
# A token endpoint's answer is a few hundred bytes; the token itself travels in a header.
TOKEN_ANSWER_MAX_BYTES = 64 * 1024
TOKEN_MAX_CHARS = 16 * 1024
TOKEN_MAX_LIFETIME = 24 * 3600  # seconds a token is cached at most, whatever `expires_in` says


class RouteFailure(Exception):
    """The route could not answer; `status` is the HTTP status, the message names the action."""

    def __init__(self, status, message, **details):
        super().__init__(message)
        self.status, self.message, self.details = status, message, details

    def body(self):
        return {"error": self.message, **self.details}


DEPTH_HEADER = "X-Backflow-Depth"


def call_depth(raw):
    """How many platform calls led to a request, from its X-Backflow-Depth (absent: 0). Past
    BACKFLOW_MAX_CALL_DEPTH the chain is a loop (a workflow whose upstream call reaches its own
    webhook, a route calling itself): LoopDetected."""
    raw = (raw or "").strip() or "0"
    if not raw.isdigit() or len(raw) > 4:
        raise InvalidInput.single(DEPTH_HEADER, "must be a small whole number; it is set by Backflow itself.")
    depth = int(raw)
    if depth > settings.BACKFLOW_MAX_CALL_DEPTH:
        raise LoopDetected(f"This call is {depth} platform calls deep (the limit is {settings.BACKFLOW_MAX_CALL_DEPTH}): "
                           "a route's or workflow's upstream calls lead back here; break the loop.")
    return depth


@dataclass
class CallSettings:
    retries: int = 2
    backoff: float = 0.1
    max_bytes: int = field(default_factory=lambda: settings.BACKFLOW_UPSTREAM_MAX_BYTES)
    # Sent upstream as X-Backflow-Depth: a webhook or route of this platform that the call reaches
    # knows how deep the chain is, and refuses it past BACKFLOW_MAX_CALL_DEPTH.
    depth: int = 1
    # A list to append one entry per upstream call to (what test_route and call_endpoint show).
    trace: list | None = None


def waves(actions):
    """Groups of actions; each group depends only on actions of earlier groups."""
    done, remaining, groups = set(), list(actions), []
    while remaining:
        ready = [a for a in remaining if _depends_on(a) <= done]
        if not ready:  # validation forbids forward references; run what is left in order
            ready = remaining[:1]
        groups.append(ready)
        done |= {a["id"] for a in ready}
        remaining = [a for a in remaining if a not in ready]
    return groups


def _depends_on(action):
    return {expr.split(".")[1] for expr in expressions(action.get("params", {})) if expr.startswith("steps.")}


class SecretResolver:
    """Turns an auth `secret` reference into its value, at call time only."""

    def __init__(self, lookup, cache_namespace, env=None):
        self.lookup = lookup  # async (reference, label) -> value; raises RouteFailure when missing
        self.cache_namespace = cache_namespace  # keeps cached OAuth tokens apart per tenant
        self.env = env  # local mode: the Environment {{env.NAME}} reads; tenants have none

    def auth_parts(self, auth, label):
        """The auth settings as used for a call: in local mode, `username`, `clientId`, `tokenUrl`…
        may be {{env.NAME}} like the secret (tenant routes use them as written)."""
        if self.env is None:
            return auth
        try:
            return {k: render(v, {}, env=self.env) if k != "secret" and isinstance(v, str) and "{{" in v else v
                    for k, v in auth.items()}
        except TemplateError as exc:
            raise RouteFailure(502, f"{label}: {exc}") from exc


def tenant_secrets(tenant):
    """Secrets of a tenant's database records, decrypted at call time."""
    from backflow.sync import in_thread
    from integrations_app.services import secret_value

    async def lookup(reference, label):
        try:
            return await in_thread(tenant.pk, secret_value, tenant=tenant, name=reference)
        except NotFound as exc:
            raise RouteFailure(502, f"{label}: {exc.message}") from exc
        except ImproperlyConfigured as exc:  # the operator changed BACKFLOW_SECRETS_KEY
            logger.error("secret %r of tenant %s: %s", reference, tenant.slug, exc)
            raise RouteFailure(502, f"{label}: the secret {reference!r} cannot be decrypted; ask the operator "
                                    "to check BACKFLOW_SECRETS_KEY, or store the secret again.") from exc

    return SecretResolver(lookup, cache_namespace=f"tenant-{tenant.pk}")


async def run_route(*, route, integrations, request_context, client, secrets, call_settings=None):
    """The route's answer (JSON) or RouteFailure."""
    call_settings = call_settings or CallSettings()
    steps = {}
    for group in waves(route["integrations"]["actions"]):
        if len(group) == 1:  # most routes: awaited here, without a task of its own
            results = [await _run_action(group[0], integrations, request_context, steps, client, secrets, call_settings)]
        else:
            results = await asyncio.gather(*(
                _run_action(action, integrations, request_context, steps, client, secrets, call_settings) for action in group
            ), return_exceptions=True)
        for action, result in zip(group, results):
            if isinstance(result, BaseException):
                raise result
            steps[action["id"]] = {"result": result}
    context = {**request_context, "steps": steps}
    if route.get("response") is None:
        return steps[route["integrations"]["actions"][-1]["id"]]["result"]
    return _render(route["response"], context, where="the route's response template")


def _render(value, context, *, where, env=None, path=False):
    try:
        return render_path(value, context, bare=context["params"], env=env) if path else render(value, context, env=env)
    except TemplateError as exc:
        status = 400 if exc.root == "request" or isinstance(exc, EmptyPathValue) else 502
        raise RouteFailure(status, f"Cannot fill {where}: {exc}") from exc


async def _run_action(action, integrations, request_context, steps, client, secrets, call_settings):
    label = f"action {action['id']!r} ({action['integration']}.{action['action']})"
    try:
        params = _render(action.get("params", {}), {**request_context, "steps": steps}, where=f"the params of {label}")
    except RouteFailure as failure:
        if call_settings.trace is not None:
            call_settings.trace.append(_trace_entry(action["id"], action["integration"], action["action"], None, 0.0, failure=failure))
        raise
    return await call_endpoint(integrations.get(action["integration"]), action["action"], params, client=client,
                               secrets=secrets, call_settings=call_settings, label=label, trace_id=action["id"])


async def call_endpoint(integration, endpoint_name, params, *, client, secrets, call_settings=None, label, trace_id=None):
    """Call one endpoint of an integration document with already-rendered params (routes, workflows,
    the call_endpoint tool). With call_settings.trace, the call appends its entry there."""
    call_settings = call_settings or CallSettings()
    started, request = time.monotonic(), None
    try:
        endpoint = next((e for e in (integration or {}).get("endpoints", []) if e["name"] == endpoint_name), None)
        if endpoint is None:
            raise RouteFailure(502, f"{label}: the integration or endpoint no longer exists.")
        request = _build_request(integration, endpoint, params, label, secrets.env)
        request.headers[DEPTH_HEADER] = str(call_settings.depth)
        request_id = current_request_id()
        if request_id and not any(name.lower() == "x-request-id" for name in request.headers):
            request.headers[REQUEST_ID_HEADER] = request_id  # the upstream's logs can name our request
        with lookups_for(secrets.cache_namespace):  # the tenant's (or local mode's) share of name lookups
            await _apply_auth(request, integration, secrets, client, label)
            result = await _send(client, request, endpoint, call_settings, label)
    except RouteFailure as failure:
        if call_settings.trace is not None:
            call_settings.trace.append(_trace_entry(trace_id or endpoint_name, (integration or {}).get("name"), endpoint_name,
                                                    request, time.monotonic() - started, failure=failure))
        raise
    if call_settings.trace is not None:
        call_settings.trace.append(_trace_entry(trace_id or endpoint_name, integration["name"], endpoint_name, request,
                                                time.monotonic() - started, result=result))
    return result


def _trace_entry(entry_id, integration, endpoint, request, seconds, *, result=None, failure=None):
    """What one upstream call did, for an assistant to read: where it went (credentials in the
    query shown as [redacted]), what came back (long results truncated, and marked so)."""
    entry = {"id": entry_id, "integration": integration, "endpoint": endpoint,
             "method": request.method.upper() if request else None, "url": _shown_url(request) if request else None,
             "upstreamStatus": request.status if request else None, "durationMs": round(seconds * 1000, 1)}
    if failure is not None:
        entry["upstreamStatus"] = failure.details.get("upstreamStatus", entry["upstreamStatus"])
        entry["error"] = failure.message
        if "upstreamBody" in failure.details:
            entry["result"] = preview(failure.details["upstreamBody"])
    else:
        entry["result"] = preview(result)
    return entry


def _shown_url(request):
    try:
        url = str(httpx.URL(request.url, params=request.params or None))
    except httpx.InvalidURL:
        url = request.url
    return scrub(url, request.credentials)  # an api_key in the query, as sent or URL-encoded


@dataclass
class UpstreamRequest:
    method: str
    url: str
    params: dict
    headers: dict
    json: object = None
    has_body: bool = False
    auth: object = None
    credentials: list = field(default_factory=list)  # values to keep out of error answers
    status: int | None = None  # the upstream's last answer
    auth_headers: set = field(default_factory=set)  # header names not sent to another origin


def _build_request(integration, endpoint, params, label, env):
    context = {"params": params}
    used = placeholder_names([endpoint.get(k) for k in ("path", "query", "headers", "body")], "params")
    used |= set(PATH_PARAM.findall(endpoint["path"]))
    path = _render(endpoint["path"], context, where=f"the path of {label}", env=env, path=True)
    query = {k: v for k, v in _render(endpoint.get("query", {}), context, where=f"the query of {label}", env=env).items() if v is not None}
    headers = _header_values(_render(endpoint.get("headers", {}), context, where=f"the headers of {label}", env=env), label)
    leftovers = {k: v for k, v in params.items() if k not in used}
    method = endpoint["method"]
    request = UpstreamRequest(method=method, url=_join(integration["baseUrl"], path, env), params=query, headers=headers)
    if "body" in endpoint:
        request.json, request.has_body = _render(endpoint["body"], context, where=f"the body of {label}", env=env), True
    elif leftovers and method not in QUERY_METHODS:
        request.json, request.has_body = leftovers, True
    if method in QUERY_METHODS:
        request.params.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in leftovers.items()})
    return request


def _header_values(headers, label):
    """Header values as sent: text without the optional whitespace around it, UTF-8 where it is
    not ASCII. A value holding a control character (CR, LF, NUL…), which would split or end the
    header, is refused rather than sent."""
    values = {}
    for name, value in headers.items():
        text = (value if isinstance(value, str) else json.dumps(value)).strip(" \t")
        if HEADER_UNSAFE.search(text):
            raise RouteFailure(400, f"{label}: the value for header {name!r} contains a control character (line break, NUL…); "
                                    "send it without.")
        values[name] = text if text.isascii() else text.encode("utf-8")
    return values


def _join(base, path, env):
    base_url = render(base, {}, env=env) if "{{" in base else base  # {{env.X}} in local mode
    return base_url.rstrip("/") + "/" + path.lstrip("/")


async def _apply_auth(request, integration, secrets, client, label):
    auth = integration.get("auth") or {"type": "none"}
    kind = auth.get("type", "none")
    if kind == "none":
        return
    secret = await secrets.lookup(auth.get("secret"), label)
    auth = secrets.auth_parts(auth, label)
    request.credentials.append(secret)
    if kind == "bearer":
        request.headers["Authorization"] = f"Bearer {secret}"
    elif kind == "basic":
        token = base64.b64encode(f"{auth['username']}:{secret}".encode()).decode()
        request.credentials.append(token)
        request.headers["Authorization"] = f"Basic {token}"
    elif kind == "api_key":
        if auth["in"] == "header":
            request.headers[auth["name"]] = secret
        else:
            request.params[auth["name"]] = secret
    elif kind == "oauth2_client_credentials":
        token = await _oauth2_token(auth, secret, secrets.cache_namespace, integration["name"], client, label)
        request.credentials.append(token)
        request.headers["Authorization"] = f"Bearer {token}"
    request.auth_headers = {"authorization"} | ({auth["name"].lower()} if kind == "api_key" and auth["in"] == "header" else set())


async def _oauth2_token(auth, client_secret, namespace, integration_name, client, label):
    """The access token of an oauth2_client_credentials integration, cached (per tenant, token URL,
    client and secret) for the lifetime the endpoint gives. The endpoint's answer is a peer's:
    read up to TOKEN_ANSWER_MAX_BYTES (decoded), parsed strictly, and its token must be header-safe
    text."""
    fingerprint = hashlib.sha256(f"{auth['tokenUrl']}|{auth['clientId']}|{client_secret}".encode()).hexdigest()[:32]
    key = f"oauth2:{namespace}:{integration_name}:{fingerprint}"
    try:
        token = await cache.aget(key)
    except redis_errors():  # the cache is down: fetch a token (and skip caching it) rather than fail the call
        token = None
    if token:
        return token
    form = {"grant_type": "client_credentials", "client_id": auth["clientId"], "client_secret": client_secret}
    if auth.get("scopes"):
        form["scope"] = " ".join(auth["scopes"])
    where = f"{label}: the OAuth token endpoint"
    try:
        async with asyncio.timeout(DEFAULT_TIMEOUT):
            async with client.stream("POST", auth["tokenUrl"], data=form,
                                     headers={"Accept": "application/json", "Accept-Encoding": ACCEPT_ENCODING}) as response:
                status = response.status_code
                raw = await read_body(response, limit=TOKEN_ANSWER_MAX_BYTES, what=f"{where}'s answer")
    except TimeoutError as exc:
        raise RouteFailure(504, f"{where} did not answer in time.") from exc
    except EgressRefused as exc:
        raise RouteFailure(502, f"{label}: OAuth token endpoint: {exc}") from exc
    except PeerBodyError as exc:
        raise RouteFailure(502, str(exc)) from exc
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise RouteFailure(502, f"{where} failed ({exc.__class__.__name__}).") from exc
    if status >= 400:
        raise RouteFailure(502, f"{where} refused the client credentials ({status}).")
    try:
        payload = parse_peer_json(raw)
    except JsonBodyError as exc:
        raise RouteFailure(502, f"{where} answered something other than acceptable JSON: {exc}") from exc
    token = payload.get("access_token") if isinstance(payload, dict) else None
    if not isinstance(token, str) or not token or len(token) > TOKEN_MAX_CHARS or HEADER_UNSAFE.search(token):
        raise RouteFailure(502, f"{where} answered {status} without a usable access_token (it must be text of at most "
                                f"{TOKEN_MAX_CHARS} characters, without control characters).")
    with contextlib.suppress(*redis_errors()):
        await cache.aset(key, token, timeout=max(1, _lifetime(payload.get("expires_in")) - 30))
    return token


def _lifetime(expires_in):
    """Seconds to keep a token: `expires_in` when it is a sensible number, else 300; at most a day."""
    try:
        seconds = int(expires_in) if isinstance(expires_in, (int, float, str)) and not isinstance(expires_in, bool) else 0
    except (ValueError, OverflowError):
        seconds = 0
    return min(seconds, TOKEN_MAX_LIFETIME) if seconds > 0 else 300


async def _send(client, request, endpoint, call_settings, label):
    """Send, counted in the metrics by outcome and timed (retries included)."""
    started, outcome = time.perf_counter(), "error"
    try:
        result = await _send_with_retries(client, request, endpoint, call_settings, label)
        outcome = "ok"
        return result
    except RouteFailure as failure:
        outcome = _outcome(failure)
        raise
    finally:
        metrics.labelled(metrics.upstream_calls, outcome).inc()
        metrics.upstream_duration.observe(time.perf_counter() - started)


def _outcome(failure):
    cause = failure.__cause__
    if isinstance(cause, (TimeoutError, httpx.TimeoutException)):
        return "timeout"
    if isinstance(cause, EgressRefused):
        return "refused"
    if isinstance(cause, PeerBodyTooLarge):
        return "too_large"
    if isinstance(cause, httpx.TransportError):
        return "unreachable"
    status = failure.details.get("upstreamStatus")
    return "http_error" if isinstance(status, int) and status >= 400 else "invalid"


async def _send_with_retries(client, request, endpoint, call_settings, label):
    """Send with retries (idempotent methods), all within the endpoint's `timeout`: the budget is
    for the whole call, so a slow upstream is a 504 naming it, not three reads and a 502."""
    timeout = float(endpoint.get("timeout") or DEFAULT_TIMEOUT)
    deadline = time.monotonic() + timeout
    attempts = 1 + (call_settings.retries if request.method in IDEMPOTENT else 0)
    too_slow = f"{label}: the upstream did not answer within {timeout:g} s (the endpoint's timeout{{}})."
    for attempt in range(attempts):
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            async with asyncio.timeout(remaining):
                status, content_type, body = await _follow(client, request, call_settings.max_bytes, label, remaining)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise RouteFailure(504, too_slow.format(", retries included" if attempt else "")) from exc
        except EgressRefused as exc:
            raise RouteFailure(502, f"{label}: {exc}") from exc
        except httpx.InvalidURL as exc:
            raise RouteFailure(502, f"{label}: the upstream URL is not valid ({exc}).") from exc
        except httpx.TransportError as exc:
            pause = call_settings.backoff * 2**attempt
            if attempt + 1 < attempts and time.monotonic() + pause < deadline:
                await asyncio.sleep(pause)
                continue
            raise RouteFailure(502, f"{label}: cannot reach the upstream ({exc.__class__.__name__}).") from exc
        request.status = status
        pause = call_settings.backoff * 2**attempt
        if status in RETRY_STATUSES and attempt + 1 < attempts and time.monotonic() + pause < deadline:
            await asyncio.sleep(pause)
            continue
        return _result(status, content_type, body, label, request.credentials)


async def _follow(client, request, max_bytes, label, timeout):
    """Send, following redirects hop by hop (each hop passes the egress guard), and read the answer
    through backflow.peer_bodies: decoded by the platform, never more than `max_bytes`."""
    method, url, params = request.method.upper(), request.url, request.params
    has_body, json_body, headers = request.has_body, request.json, request.headers
    if not any(name.lower() == "accept-encoding" for name in headers):
        headers = {**headers, "Accept-Encoding": ACCEPT_ENCODING}  # only what peer_bodies decodes
    origin = None  # the first URL's, parsed when a redirect asks for it (most calls follow none)
    for _ in range(MAX_REDIRECTS + 1):
        kwargs = {"params": params, "headers": headers, "timeout": timeout}  # not the client's shorter default
        if has_body:
            kwargs["json"] = json_body
        async with client.stream(method, url, **kwargs) as response:
            if response.is_redirect and "location" in response.headers:
                url, next_origin = _next_hop(response, label)
                params = None
                origin = origin or _origin(request.url)
                if next_origin != origin:  # credentials stay with the origin they were meant for
                    headers = {k: v for k, v in headers.items() if k.lower() not in request.auth_headers}
                if response.status_code in (301, 302, 303) and method not in ("GET", "HEAD"):
                    method, has_body, json_body = "GET", False, None
                continue
            try:
                body = await read_body(response, limit=max_bytes, what="the upstream answer", setting="BACKFLOW_UPSTREAM_MAX_BYTES")
            except PeerBodyError as exc:
                raise RouteFailure(502, f"{label}: {exc}") from exc
            return response.status_code, response.headers.get("content-type", ""), body
    raise RouteFailure(502, f"{label}: more than {MAX_REDIRECTS} redirects.")


def _origin(url):
    parsed = httpx.URL(url)
    return parsed.scheme, parsed.host, parsed.port


def _next_hop(response, label):
    """Where a redirect leads, and its origin; a Location that is no URL is the upstream's fault (502)."""
    location = response.headers["location"]
    try:
        url = urljoin(str(response.url), location)
        return url, _origin(url)
    except (ValueError, httpx.InvalidURL) as exc:  # UnicodeError is a ValueError
        shown = location.encode("unicode_escape").decode("ascii")[:200]
        raise RouteFailure(502, f"{label}: the upstream redirected ({response.status_code}) to {shown!r}, which is not a "
                                "valid URL.", upstreamStatus=response.status_code) from exc


def _result(status, content_type, body, label, credentials=()):
    """The upstream's answer as a value: JSON parsed strictly (backflow.jsonbody: no NaN or
    Infinity, nesting bounded), other types as text; scrubbed of the credentials sent."""
    text = body.decode("utf-8", errors="replace")
    if "json" in content_type:
        try:
            value = parse_peer_json(text) if text.strip() else None
        except JsonBodyError as exc:
            raise RouteFailure(502, f"{label}: the upstream said JSON but sent something else: {exc}", upstreamStatus=status) from exc
    else:
        value = text
    value = scrub(value, credentials)
    if status >= 300:  # a 3xx that is not followed (no Location, or 300, 304, 305…) is no answer either
        raise RouteFailure(502, f"{label}: the upstream answered {status}.", upstreamStatus=status,
                           upstreamBody=_truncate(value))
    return value


def _truncate(value, limit=2000):
    text = value if isinstance(value, str) else json.dumps(value)
    return value if len(text) <= limit else text[:limit] + "…"
