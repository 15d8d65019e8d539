"""Build–test tools that reach the tenant's upstreams: try an endpoint, run a route as its callers
would, with a trace of every upstream call, and import an integration from an OpenAPI document
(remote, tenant and local mode)."""

import time

import anyio
import httpx
from django.conf import settings

from backflow.asgi_utils import HttpError
from backflow.egress import EgressRefused, lookups_for, shared_client
from backflow.errors import Conflict, InvalidInput, NotFound, ServiceError, TooManyRequests
from backflow.peer_bodies import ACCEPT_ENCODING, PeerBodyError, read_body
from backflow.redaction import preview
from backflow.sync import in_thread
from integrations_app import openapi, runtime, services
from integrations_app.dispatch import LocalSite, caller_wait, routes_asgi
from integrations_app.documents import ENDPOINT_NAME_PATTERN, HTTP_METHOD, NAME_HELP, NAME_PATTERN
from mcp_app.outputs import INTEGER, NULLABLE_STRING, STRING, array, obj
from mcp_app.registry import tool

BODY_PREVIEW_CHARS = 4000
TRACE_ENTRY = obj(required=("id", "url", "upstreamStatus", "durationMs"), id=STRING, url=NULLABLE_STRING,
                  upstreamStatus={"type": ["integer", "null"]}, durationMs={"type": "number"}, error=STRING)
STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}


def _site(ctx):
    """Where the tenant's routes are served from: its database records, or the local files."""
    return LocalSite(ctx.store) if ctx.local else None


@tool(name="test_route", title="Test route", scope="routes:write", open_world=True, destructive=True, local_mode=True,
      output=obj(status=INTEGER, body={}, durationMs={"type": "number"}, trace=array(TRACE_ENTRY)), schema={
          "type": "object",
          "properties": {
              "method": HTTP_METHOD,
              "path": {"type": "string", "pattern": "^/", "maxLength": 2000,
                       "description": "The path as a caller sends it below /t/<tenant>, e.g. /bookings/42."},
              "query": {**STRINGS, "description": "Query parameters, e.g. {\"date\": \"2026-12-06\"}."},
              "body": {"type": ["object", "array", "string", "number", "integer", "boolean", "null"], "description": "The JSON body."},
              "headers": {**STRINGS, "description": "Request headers (names lower-case), as {{request.headers.x}} sees them."},
          },
          "required": ["method", "path"],
          "additionalProperties": False,
      })
async def test_route(ctx, args):
    """Run a route of the tenant as a call of /t/<tenant><path> would (same runtime, secrets and
    limits) and return status, body and a trace: per action its URL, upstream status, duration,
    error and result (credentials redacted, long results truncated). Calls the real upstreams."""
    method, path = args["method"].lower(), "/" + args["path"].strip("/")
    started, trace = time.monotonic(), []
    try:
        site = _site(ctx) or await routes_asgi.sites.site(ctx.tenant.slug)
        route, path_params = site.table.match(method, path)
    except HttpError as exc:  # no such route, or another method: what a caller would get
        return {"status": exc.status, "body": exc.body(), "durationMs": 0.0, "trace": []}
    wait = await in_thread(site.owner, caller_wait, site, ctx.actor.label if ctx.actor else "local")
    if wait:
        raise TooManyRequests(f"Too many requests to this tenant's routes from you; retry in {wait} s.", retry_after=wait)
    headers = {name.lower(): value for name, value in (args.get("headers") or {}).items()}
    try:
        status, answer, error = await routes_asgi.serve(site, route, path_params, args.get("query") or {}, args.get("body", {}),
                                                        headers, depth=0, trace=trace)
    except HttpError as exc:  # the tenant's route calls in flight are at their bound
        raise ServiceError(exc.message) from exc
    duration = round((time.monotonic() - started) * 1000, 2)
    routes_asgi.record_soon(site, route, method, path, status, duration, error, test=True)
    return {"status": status, "body": preview(answer, BODY_PREVIEW_CHARS), "durationMs": duration, "trace": trace}


@tool(name="call_endpoint", title="Call endpoint", scope="integrations:write", open_world=True, destructive=True, local_mode=True,
      output=TRACE_ENTRY, schema={
          "type": "object",
          "properties": {
              "integration": {"type": "string", "pattern": NAME_PATTERN, "x-pattern-help": NAME_HELP, "description": "The integration's name."},
              "endpoint": {"type": "string", "pattern": ENDPOINT_NAME_PATTERN, "description": "One of its endpoints' names."},
              "params": {"type": "object", "description": "The endpoint's params, as a route action gives them ({{params.x}}, {x})."},
          },
          "required": ["integration", "endpoint"],
          "additionalProperties": False,
      })
async def call_endpoint(ctx, args):
    """Call one endpoint of an integration with its credentials and return the trace entry: URL,
    upstream status, duration, error and result (credentials redacted, long results truncated)."""
    integration = await in_thread(ctx.owner, ctx.store.get_integration, args["integration"])
    if integration is None:
        raise NotFound(f"No integration named {args['integration']!r}; list_integrations shows the existing ones.")
    names = [endpoint["name"] for endpoint in integration["endpoints"]]
    if args["endpoint"] not in names:
        raise InvalidInput.single("endpoint", f"{args['integration']!r} has no endpoint {args['endpoint']!r} (endpoints: {', '.join(names) or 'none'}).")
    secrets = _site(ctx).secrets if ctx.local else runtime.tenant_secrets(ctx.tenant)
    trace = []
    try:
        await runtime.call_endpoint(integration, args["endpoint"], args.get("params") or {}, client=shared_client(), secrets=secrets,
                                    call_settings=runtime.CallSettings(trace=trace), label=f"{args['integration']}.{args['endpoint']}")
    except runtime.RouteFailure:
        pass  # the trace entry says what failed
    return trace[0]


SPEC_FETCH_SECONDS = 15.0


async def _fetch_spec(url):
    """The document at `url`, fetched through the egress guard, size-capped, no redirects followed."""
    limit = settings.BACKFLOW_UPSTREAM_MAX_BYTES
    try:
        with anyio.fail_after(SPEC_FETCH_SECONDS):
            async with shared_client().stream("GET", url, headers={"Accept": "application/json, application/yaml, text/yaml, */*",
                                                                   "Accept-Encoding": ACCEPT_ENCODING},
                                              timeout=SPEC_FETCH_SECONDS) as response:
                if response.is_redirect:
                    raise InvalidInput.single("url", f"it redirects to {response.headers.get('location', '?')!r}; give that URL.")
                if response.status_code >= 400:
                    raise InvalidInput.single("url", f"it answered {response.status_code}.")
                return await read_body(response, limit=limit, what="the OpenAPI document", setting="BACKFLOW_UPSTREAM_MAX_BYTES")
    except TimeoutError as exc:
        raise InvalidInput.single("url", f"no answer within {SPEC_FETCH_SECONDS:g} s.") from exc
    except (EgressRefused, PeerBodyError) as exc:
        raise InvalidInput.single("url", str(exc)) from exc
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise InvalidInput.single("url", f"cannot fetch it ({exc.__class__.__name__}).") from exc


def _write_integration(ctx, document, update):
    exists = ctx.store.get_integration(document["name"]) is not None
    if exists and not update:
        raise Conflict(f"An integration named {document['name']!r} already exists; give update: true to replace its endpoints.",
                       {"integration": ["Already exists."]})
    if exists:
        return services.integration_update(store=ctx.store, name=document["name"], changes=document, partial=True), "updated"
    return services.integration_create(store=ctx.store, document=document), "created"


@tool(name="import_openapi", title="Import OpenAPI", scope="integrations:write", open_world=True, destructive=True, local_mode=True,
      output=obj(required=("integration", "outcome", "endpoints", "skipped"), integration=STRING, outcome=STRING,
                 endpoints=array(STRING), skipped=array({"type": "object"}), auth=NULLABLE_STRING), schema={
          "type": "object",
          "properties": {
              "integration": {"type": "string", "pattern": NAME_PATTERN, "x-pattern-help": NAME_HELP, "description": "Name for the integration."},
              "spec": {"type": ["object", "string"], "description": "The OpenAPI 3.0/3.1 document: an object, or JSON or YAML text."},
              "url": {"type": "string", "pattern": "^https?://", "maxLength": 2000, "description": "Where to fetch it instead of `spec`."},
              "include": {"type": "object", "description": "Only these operations: {tags?, paths?, operationIds?} (lists)."},
              "baseUrl": {"type": "string", "pattern": "^https?://", "description": "Overrides the document's first server URL."},
              "update": {"type": "boolean", "description": "Replace the endpoints, base URL and auth of an existing integration."},
          },
          "required": ["integration"],
          "additionalProperties": False,
      })
async def import_openapi(ctx, args):
    """Create an integration (or with update: true replace its endpoints) from an OpenAPI 3.0/3.1
    document, one endpoint per selected operation; reports what could not be mapped and the secret
    its auth needs."""
    if ("spec" in args) == ("url" in args):
        raise InvalidInput.single("spec", "give the document as `spec`, or its `url`, not both.")
    include = args.get("include") or {}
    if not isinstance(include, dict) or any(not isinstance(include.get(k, []), list) for k in ("tags", "paths", "operationIds")) \
            or set(include) - {"tags", "paths", "operationIds"}:
        raise InvalidInput.single("include", "give lists under tags, paths and operationIds.")
    if "spec" in args:
        raw = args["spec"]
    else:
        with lookups_for(ctx.owner):
            raw = await _fetch_spec(args["url"])
    document = openapi.load(raw)
    integration, report = openapi.integration_document(document, name=args["integration"], base_url=args.get("baseUrl"),
                                                       include=include, local=ctx.local)
    saved, outcome = await in_thread(ctx.owner, _write_integration, ctx, integration, args.get("update", False))
    return {"integration": saved["name"], "outcome": outcome, "endpoints": [e["name"] for e in saved["endpoints"]],
            "skipped": report["skipped"], "auth": report["auth"]}
