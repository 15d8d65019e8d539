"""The egress guard sits on every outbound path of the platform.

Outbound HTTP is made in four places: tenant routes calling integrations (with OAuth token fetches
and redirects; integrations_app/tests/test_egress.py), workflow `integration` steps, tenants' HTTP and
SSE MCP servers (workflows_app/tests/test_mcp_steps.py) and `llm_call`. A scan of the source proves
there is no fifth: every HTTP client of the server code is built by backflow/egress.py. The tests
here cover the two paths not proved elsewhere, with the tripwire backend inside the guard: a target
the guard should refuse fails the test if it ever reaches the network. Nothing is sent beyond
loopback.
"""

import ast
import asyncio
from pathlib import Path

import pytest
from django.conf import settings

from integrations_app.tests.test_runtime_helpers import Reply, Tripwire, make_integration
from workflows_app import engine, llm
from workflows_app import services as workflow_services
from workflows_app.tests.helpers import run_now, step, workflow

ROOT = Path(settings.BASE_DIR)
APPS = ("backflow", "tenants", "integrations_app", "entities_app", "workflows_app", "mcp_app")
# The one module allowed to build outbound clients (the bridge, bridge/, is another distribution that
# runs on the user's machine and calls the Backflow server the user names: not the platform's egress).
BUILDERS = {"backflow/egress.py"}
CLIENT_CALLS = {"AsyncClient", "Client", "urlopen", "create_connection", "open_connection", "Session", "request"}
NETWORK_MODULES = {"httpx", "httpx2", "requests", "urllib", "aiohttp", "socket", "asyncio", "http"}
# The SDK's transports make their own client unless handed one (or a factory) of the guard.
SDK_TRANSPORTS = {"sse_client": "httpx_client_factory", "streamable_http_client": "http_client"}


def _server_sources():
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            relative = path.relative_to(ROOT).as_posix()
            if "/tests/" not in relative and "/migrations/" not in relative:
                yield relative, ast.parse(path.read_text(encoding="utf-8"))


def _outbound_calls(tree):
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in CLIENT_CALLS:
            base = func.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in NETWORK_MODULES:
                yield node.lineno, ast.unparse(func)
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if name in SDK_TRANSPORTS and SDK_TRANSPORTS[name] not in {k.arg for k in node.keywords}:
            yield node.lineno, f"{name} without {SDK_TRANSPORTS[name]}="


def test_every_outbound_client_of_the_server_is_built_by_the_egress_module():
    found = {relative: list(_outbound_calls(tree)) for relative, tree in _server_sources()}
    assert found["backflow/egress.py"], "the scan no longer recognises how egress.py builds its clients"
    unguarded = {path: calls for path, calls in found.items() if calls and path not in BUILDERS}
    assert not unguarded, f"outbound clients built outside backflow/egress.py (use guarded_client): {unguarded}"


@pytest.fixture
def guarded_with_tripwire(monkeypatch):
    """Every guarded client of the engine and of llm_call gets the tripwire as its network backend."""
    from backflow import egress

    tripwire = Tripwire()

    def client(**kwargs):
        return egress.guarded_client(inner_backend=tripwire, **kwargs)

    monkeypatch.setattr(engine, "shared_client", lambda: client())
    monkeypatch.setattr(llm, "guarded_client", client)
    yield tripwire
    assert not tripwire.violations, tripwire.violations


def _integration_workflow(ctx, slug, integration):
    return workflow_services.workflow_create(tenant=ctx.tenant, actor=ctx.actor, document=workflow(
        slug, [step("fetch", "things")],
        tools=[{"name": "things", "type": "integration", "params": {"integration": integration, "action": "listThings"}}],
    ))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("base_url", ["http://10.0.0.1/v1", "http://169.254.169.254/latest", "http://[::1]:9/v1"])
def test_workflow_integration_steps_are_refused_private_addresses(acme, base_url, guarded_with_tripwire, settings):
    settings.BACKFLOW_EGRESS_ALLOW = []
    make_integration(acme, "internal", base_url, [{"name": "listThings", "method": "get", "path": "/things"}])
    run = run_now(acme, _integration_workflow(acme, "internal", "internal"))
    assert run.status == "failed" and "Refused to call" in run.error and "BACKFLOW_EGRESS_ALLOW" in run.error, run.error
    assert guarded_with_tripwire.reached == []


@pytest.mark.django_db(transaction=True)
def test_workflow_integration_steps_reach_what_the_operator_allows(acme, upstream, guarded_with_tripwire, settings):
    upstream.on("GET", "/things", Reply(body={"things": [1, 2]}))
    make_integration(acme, "local", upstream.url, [{"name": "listThings", "method": "get", "path": "/things"}])
    wf = _integration_workflow(acme, "local", "local")

    settings.BACKFLOW_EGRESS_ALLOW = []
    assert run_now(acme, wf).status == "failed" and upstream.calls() == []

    settings.BACKFLOW_EGRESS_ALLOW = ["127.0.0.1"]
    run = run_now(acme, wf)
    assert run.status == "succeeded", run.error
    assert len(upstream.calls("/things")) == 1


def test_llm_calls_reach_the_operators_host_and_follow_no_redirect(upstream, guarded_with_tripwire, settings):
    settings.BACKFLOW_EGRESS_ALLOW = []  # the LLM's own host is trusted because the operator named it
    settings.BACKFLOW_LLM_BASE_URL, settings.BACKFLOW_LLM_MODEL = f"{upstream.url}/v1", "m"
    answer = {"choices": [{"message": {"role": "assistant", "content": "hi"}}]}
    upstream.on("POST", "/v1/chat/completions", Reply(body=answer))
    assert asyncio.run(llm.complete(prompt="hello")) == "hi"
    # An answer that points elsewhere (here: the cloud metadata address) is not followed.
    upstream.on("POST", "/v1/chat/completions", Reply(status=307, headers={"Location": "http://169.254.169.254/v1/chat/completions"}))
    with pytest.raises(llm.LlmError):
        asyncio.run(llm.complete(prompt="hello"))
    assert guarded_with_tripwire.reached == [("127.0.0.1", upstream.port)] * 2
