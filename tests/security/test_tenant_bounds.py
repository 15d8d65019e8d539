"""Bounded work per tenant (issue 14, holes 2, 9 and 11): one tenant's load waits behind its own.

- database threads: a tenant holds at most BACKFLOW_SYNC_THREADS_PER_TENANT of the pool;
- runs: at most BACKFLOW_TENANT_RUNS_PER_MINUTE queued a minute (429 on every door) and
  BACKFLOW_TENANT_RUNNING_RUNS executing at once (the rest wait their turn in the queue);
- loops: every upstream call carries X-Backflow-Depth; a webhook or route reached past
  BACKFLOW_MAX_CALL_DEPTH answers 508 (a workflow that triggers itself through its webhook ran
  575 times in 15 s before);
- route calls in flight per tenant, SSE streams per credential;
- an integration cannot point at the platform itself.
"""

import asyncio
import gc
import threading
import time

import httpx
import pytest
from asgiref.sync import async_to_sync
from rest_framework.test import APIClient

from backflow import sync
from integrations_app.tests.test_runtime_helpers import Reply, make_integration, make_route
from integrations_app.tests.test_runtime_helpers import _fresh_route_tables, inprocess, tripwire  # noqa: F401 (fixtures)
from mcp_app.http import connection_for
from mcp_app.tests.helpers import result_json
from mcp_app.tests.test_remote_support import bearer, raw_sse
from tenants.authentication import principal_for_token
from tests.security.test_fairness import Tarpit
from tests.security.test_mcp_fuzz import fuzz_session
from tests.shares import run_with_shares
from workflows_app import engine
from workflows_app import services as workflow_services
from workflows_app.models import WorkflowRun
from workflows_app.tests.helpers import Worker, step, workflow

# -- the database threads -------------------------------------------------------------------------


class SlowWork:
    """Half a second of a tenant's thread work, counting how many ran at once (`most`)."""

    def __init__(self, then_raise=False):
        self.lock, self.running, self.most, self.then_raise = threading.Lock(), 0, 0, then_raise

    def __call__(self):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.5)
        with self.lock:
            self.running -= 1
        if self.then_raise:
            raise RuntimeError("nobody is left to read this")


@pytest.mark.pool_threads
def test_a_tenant_holds_at_most_its_share_of_the_database_threads(settings):
    settings.BACKFLOW_SYNC_THREADS, settings.BACKFLOW_SYNC_THREADS_PER_TENANT = 8, 2
    slow = SlowWork()

    async def main():
        busy = [asyncio.create_task(sync.in_thread("busy", slow)) for _ in range(6)]
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await sync.in_thread("other", lambda: None)
        other_waited = time.monotonic() - started
        await asyncio.gather(*busy)
        return other_waited

    other_waited, shares = run_with_shares(main())
    assert slow.most == 2, slow.most  # never more than its share at once
    assert other_waited < 0.4, other_waited  # the other tenant did not queue behind it
    assert not shares  # nothing kept for owners with no work


@pytest.mark.pool_threads
def test_a_tenant_that_hangs_up_on_its_work_still_holds_only_its_share(settings):
    """A thread cannot be stopped: a caller cancelled (its client gone) leaves its work running, and
    the work keeps the tenant's slot until it ends, or hanging up again and again would take the pool."""
    settings.BACKFLOW_SYNC_THREADS, settings.BACKFLOW_SYNC_THREADS_PER_TENANT = 8, 2
    slow = SlowWork(then_raise=True)

    async def main():
        for _ in range(3):  # each time, two calls start and their callers hang up
            callers = [asyncio.create_task(sync.in_thread("busy", slow)) for _ in range(2)]
            await asyncio.sleep(0.1)
            for caller in callers:
                caller.cancel()
            await asyncio.gather(*callers, return_exceptions=True)
        started = time.monotonic()
        await sync.in_thread("other", lambda: None)
        other_waited = time.monotonic() - started
        # Waits for the hung-up work to end: the share's two slots come back only then.
        await asyncio.gather(*(sync.in_thread("busy", lambda: None) for _ in range(2)))
        return other_waited

    other_waited, shares = run_with_shares(main())
    assert slow.most == 2, slow.most  # never more than its share at once
    assert other_waited < 0.4, other_waited
    assert not shares


@pytest.mark.pool_threads
def test_a_loop_that_ends_before_a_hung_up_work_keeps_no_share(settings):
    """A loop may close while a hung-up caller's work still runs on its thread (the work gives its
    slot back to that loop only when it ends): the closed loop's shares go with it, so no later
    loop, which may get the same id, finds one with a slot held for good."""
    settings.BACKFLOW_SYNC_THREADS, settings.BACKFLOW_SYNC_THREADS_PER_TENANT = 8, 2

    async def hang_up():
        caller = asyncio.create_task(sync.in_thread("hung up", SlowWork()))
        await asyncio.sleep(0.1)
        caller.cancel()
        await asyncio.gather(caller, return_exceptions=True)

    asyncio.run(hang_up())  # closes its loop with the work running
    time.sleep(0.7)  # the work ends
    gc.collect()
    assert not any("hung up" in shares for shares in sync._shares.values())


# -- runs ---------------------------------------------------------------------------------------


def _noop_workflow(ctx, slug="wf", triggers=None):
    """A one-step workflow (the step fails at once: no LLM is configured; only queueing matters here)."""
    return workflow_services.workflow_create(tenant=ctx.tenant, actor=ctx.actor, document=workflow(
        slug, [step("s", "ask", {"prompt": "hi"})], tools=[{"name": "ask", "type": "llm_call", "params": {}}], triggers=triggers))


@pytest.mark.django_db(transaction=True)
def test_runs_queued_per_minute_are_bounded_on_every_door(acme, globex, settings):
    settings.BACKFLOW_TENANT_RUNS_PER_MINUTE = 2
    wf = _noop_workflow(acme, triggers=[{"type": "webhook"}])
    for _ in range(2):
        assert acme.client().post("/api/workflows/wf/runs/", {"input": {}}, format="json").status_code in (201, 202)
    refused = acme.client().post("/api/workflows/wf/runs/", {"input": {}}, format="json")
    assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1 and "runs" in refused.json()["detail"], refused.content
    with fuzz_session(connection_for(principal_for_token(acme.key))) as session:
        result = session.call("run_workflow", {"id": "wf", "wait": 0})
    assert result.is_error and result_json(result)["retryAfterSeconds"] >= 1, result

    # Whoever holds the webhook URL floods it: webhook runs meet their bound, not the tenant's own runs.
    hooks = [APIClient().post(wf.to_document()["webhookUrl"], {}, format="json") for _ in range(3)]
    assert [h.status_code for h in hooks] == [202, 202, 429], [h.content for h in hooks]
    assert hooks[-1]["Content-Type"].startswith("application/json")
    assert WorkflowRun.objects.for_tenant(acme.tenant).count() == 4

    _noop_workflow(globex)  # another tenant queues as usual
    assert globex.client().post("/api/workflows/wf/runs/", {"input": {}}, format="json").status_code in (201, 202)


@pytest.mark.django_db(transaction=True)
def test_a_tenants_runs_beyond_its_running_bound_wait_in_the_queue(acme, globex, settings):
    from django_tasks_db.models import DBTaskResult

    settings.BACKFLOW_TENANT_RUNNING_RUNS = 1
    busy = workflow_services.run_create(tenant=acme.tenant, actor=acme.actor, workflow=_noop_workflow(acme))
    WorkflowRun.objects.for_tenant(acme.tenant).filter(pk=busy.pk).update(status=WorkflowRun.Status.RUNNING)
    waiting = workflow_services.run_create(tenant=acme.tenant, actor=acme.actor, workflow=WorkflowRun.objects.for_tenant(acme.tenant).get(pk=busy.pk).workflow)
    before = DBTaskResult.objects.count()
    assert engine.execute(waiting.id) is None
    waiting.refresh_from_db()
    assert waiting.status == WorkflowRun.Status.QUEUED  # not lost, not run: queued again, for a moment later
    assert DBTaskResult.objects.count() == before + 1
    deferred = DBTaskResult.objects.order_by("-enqueued_at").first()
    assert deferred.args_kwargs["args"] == [str(waiting.id)] and deferred.run_after is not None

    other = workflow_services.run_create(tenant=globex.tenant, actor=globex.actor, workflow=_noop_workflow(globex))
    assert engine.execute(other.id) is not None  # another tenant's run is not held back


# -- loops: X-Backflow-Depth --------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_webhooks_refuse_calls_past_the_depth_bound(acme, upstream, settings):
    settings.BACKFLOW_EGRESS_ALLOW, settings.BACKFLOW_MAX_CALL_DEPTH = ["127.0.0.1"], 3
    make_integration(acme, "up", upstream.url, [{"name": "ping", "method": "post", "path": "/ping"}])
    wf = workflow_services.workflow_create(tenant=acme.tenant, actor=acme.actor, document=workflow(
        "hook", [step("call", "ping")], tools=[{"name": "ping", "type": "integration", "params": {"integration": "up", "action": "ping"}}],
        triggers=[{"type": "webhook"}]))
    url = wf.to_document()["webhookUrl"]
    refused = APIClient().post(url, {}, format="json", HTTP_X_BACKFLOW_DEPTH="4")
    assert refused.status_code == 508 and "loop" in refused.json()["detail"], refused.content
    assert APIClient().post(url, {}, format="json", HTTP_X_BACKFLOW_DEPTH="nope").status_code == 400
    assert not WorkflowRun.objects.for_tenant(acme.tenant).exists()

    accepted = APIClient().post(url, {}, format="json", HTTP_X_BACKFLOW_DEPTH="3")
    assert accepted.status_code == 202, accepted.content
    run = WorkflowRun.objects.for_tenant(acme.tenant).get()
    assert run.depth == 3
    assert engine.execute(run.id) == WorkflowRun.Status.SUCCEEDED
    assert upstream.calls("/ping")[0].headers["x-backflow-depth"] == "4"  # the next hop would be refused


def test_routes_refuse_calls_past_the_depth_bound_and_pass_it_on(acme, upstream, inprocess, settings):
    settings.BACKFLOW_MAX_CALL_DEPTH = 3
    make_integration(acme, "up", upstream.url, [{"name": "ping", "method": "get", "path": "/ping"}])
    make_route(acme, "/ping", [{"integration": "up", "action": "ping"}], requireAuth=False)
    refused = inprocess.call("GET", "/t/acme/ping", headers={"X-Backflow-Depth": "4"})
    assert refused.status_code == 508 and "loop" in refused.json()["error"], refused.text
    assert upstream.calls() == []
    assert inprocess.call("GET", "/t/acme/ping", headers={"X-Backflow-Depth": "2"}).status_code == 200
    assert inprocess.call("GET", "/t/acme/ping").status_code == 200
    assert [seen.headers["x-backflow-depth"] for seen in upstream.calls()] == ["3", "1"]


@pytest.mark.slow
def test_a_workflow_that_triggers_itself_stops_at_the_depth_bound(acme, live_daphne):
    """The attack: a webhook-triggered workflow whose integration step POSTs to its own webhook."""
    env = {"BACKFLOW_EGRESS_ALLOW": "127.0.0.1", "BACKFLOW_MAX_CALL_DEPTH": "3"}
    server = live_daphne(**env)
    with httpx.Client(base_url=server.url, headers=bearer(acme.key), timeout=10) as http:
        http.post("/api/integrations/", json={"name": "self", "baseUrl": server.url,
                                              "endpoints": [{"name": "hook", "method": "post", "path": "/hooks/acme/loop/{token}",
                                                                             "body": {"token": "{{params.token}}"}}]})
        created = http.post("/api/workflows/", json={
            "id": "loop", "name": "Loop", "triggers": [{"type": "webhook"}],
            "workflows": [{"name": "main", "steps": [{"id": "again", "action": "again", "params": {"token": "{{input.token}}"}}]}],
            "tools": [{"name": "again", "type": "integration", "params": {"integration": "self", "action": "hook"}}]})
        assert created.status_code == 201, created.text
        token = created.json()["webhookUrl"].rsplit("/", 1)[1]
        assert http.post(created.json()["webhookUrl"], json={"token": token}).status_code == 202
    worker = Worker(**env)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            runs = list(WorkflowRun.objects.for_tenant(acme.tenant).order_by("depth"))
            if len(runs) == 4 and all(r.status in WorkflowRun.FINISHED for r in runs):
                break
            time.sleep(0.2)
        time.sleep(1.0)  # would a fifth come?
        runs = list(WorkflowRun.objects.for_tenant(acme.tenant).order_by("depth"))
    finally:
        worker.stop()
    assert [r.depth for r in runs] == [0, 1, 2, 3], [(r.depth, r.status, r.error) for r in runs]
    assert runs[-1].status == WorkflowRun.Status.FAILED and "508" in runs[-1].error, runs[-1].error


# -- in flight at once ------------------------------------------------------------------------------


@pytest.mark.slow
def test_route_calls_in_flight_and_sse_streams_are_bounded_per_owner(acme, globex, upstream, live_daphne):
    tarpit = Tarpit()
    upstream.on("GET", "/ok", Reply(body={"ok": True}))
    server = live_daphne(BACKFLOW_EGRESS_ALLOW="127.0.0.1", BACKFLOW_ROUTE_CONCURRENCY_PER_TENANT="3",
                         BACKFLOW_SSE_SESSIONS_PER_PRINCIPAL="2")
    make_integration(acme, "tar", tarpit.url, [{"name": "hang", "method": "get", "path": "/hang", "timeout": 30}])
    make_route(acme, "/hang", [{"integration": "tar", "action": "hang"}], requireAuth=False)
    make_integration(globex, "up", upstream.url, [{"name": "ok", "method": "get", "path": "/ok"}])
    make_route(globex, "/ok", [{"integration": "up", "action": "ok"}], requireAuth=False)

    async def main():
        async with httpx.AsyncClient(base_url=server.url, timeout=40) as http:
            hanging = [asyncio.create_task(http.get("/t/acme/hang")) for _ in range(3)]
            await asyncio.sleep(1.0)
            fourth = await http.get("/t/acme/hang")
            other = await http.get("/t/globex/ok")
            for task in hanging:
                task.cancel()
            await asyncio.gather(*hanging, return_exceptions=True)

            async with raw_sse(http, "/mcp/sse", bearer(acme.key)), raw_sse(http, "/mcp/sse", bearer(acme.key)):
                third = await http.get("/mcp/sse", headers=bearer(acme.key))
                elsewhere = http.build_request("GET", "/mcp/sse", headers=bearer(globex.key))
                response = await http.send(elsewhere, stream=True)
                other_stream = response.status_code
                await response.aclose()
            for _ in range(50):  # a closed stream gives its place back once the server has seen it go
                reopened = http.build_request("GET", "/mcp/sse", headers=bearer(acme.key))
                response = await http.send(reopened, stream=True)
                await response.aclose()
                if response.status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert response.status_code == 200, response.status_code
            return fourth, other, third, other_stream

    try:
        fourth, other, third, other_stream = asyncio.run(main())
    finally:
        tarpit.close()
    assert fourth.status_code == 503 and fourth.headers["retry-after"] == "1" and "in progress" in fourth.json()["error"], fourth.text
    assert other.status_code == 200 and other.json() == {"ok": True}
    assert third.status_code == 429 and "SSE" in third.json()["error"], third.text
    assert other_stream == 200


# -- the platform itself is no upstream ---------------------------------------------------------


def test_an_integration_cannot_call_the_platform_itself(acme, settings):
    settings.BACKFLOW_PUBLIC_URL = "https://backflow.example.com"
    settings.ALLOWED_HOSTS = ["backflow.example.com", "api.backflow.example.com", "127.0.0.1", "testserver"]
    for base in ("https://backflow.example.com/t/acme", "http://BACKFLOW.example.com:8080/hooks", "https://api.backflow.example.com"):
        response = acme.client().post("/api/integrations/", {"name": "loop", "baseUrl": base}, format="json")
        assert response.status_code == 400 and "platform itself" in response.json()["errors"]["baseUrl"][0], response.content
    for base in ("http://0177.0.0.1/", "http://[::1/"):
        response = acme.client().post("/api/integrations/", {"name": "odd", "baseUrl": base}, format="json")
        assert response.status_code == 400 and "baseUrl" in response.json()["errors"], response.content
    assert acme.client().post("/api/integrations/", {"name": "fine", "baseUrl": "https://api.example.com"}, format="json").status_code == 201


def test_anonymous_callers_cannot_spend_the_tenants_route_budget(acme, upstream, tripwire, monkeypatch, settings):
    """Found by the outside review: 6,000 anonymous calls to a public route that answered 400 used up
    the tenant's whole budget, and every one of its routes, private ones included, answered 429."""
    import asyncio as aio
    import time as clock

    from django.core.cache import cache

    from backflow.asgi import application
    from backflow.egress import guarded_client
    from integrations_app import dispatch

    settings.BACKFLOW_EGRESS_ALLOW, settings.BACKFLOW_ROUTE_RATE_LIMIT = ["127.0.0.1"], (3, 60)
    client = guarded_client(inner_backend=tripwire)
    monkeypatch.setattr(dispatch, "shared_client", lambda: client)
    upstream.on("GET", "/ok", Reply(body={"ok": True}))
    make_integration(acme, "up", upstream.url, [{"name": "ok", "method": "get", "path": "/ok"}])
    make_route(acme, "/public", [{"integration": "up", "action": "ok"}], requireAuth=False)
    make_route(acme, "/private", [{"integration": "up", "action": "ok"}])
    window = int(clock.time() // 60)
    for caller in ("ip:10.9.8.7", "ip:10.1.1.1", acme.actor.label):
        cache.delete(f"ratelimit:routes:{acme.tenant.pk}:{caller}:{window}")

    async def main():
        def http(address):
            transport = httpx.ASGITransport(app=application, client=(address, 40000))
            return httpx.AsyncClient(transport=transport, base_url="http://testserver")

        async with http("10.9.8.7") as attacker, http("10.1.1.1") as customer:
            flood = [(await attacker.get("/t/acme/public")).status_code for _ in range(6)]
            others = [(await customer.get("/t/acme/public")).status_code,
                      (await customer.get("/t/acme/private", headers={"Authorization": f"Bearer {acme.key}"})).status_code]
        await client.aclose()
        while dispatch.routes_asgi._background:
            await aio.gather(*list(dispatch.routes_asgi._background), return_exceptions=True)
        return flood, others

    flood, others = async_to_sync(main)()
    assert flood == [200, 200, 200, 429, 429, 429], flood  # the flooder meets its own limit
    assert others == [200, 200], others  # and nobody else does


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_one_worker_runs_another_tenants_run_while_one_hangs(acme, globex, upstream):
    """Found by the outside review: one `run_worker` executed runs strictly one after another, so a
    tenant's run waiting on a slow upstream held up every other tenant's runs."""
    tarpit = Tarpit()
    upstream.on("GET", "/ok", Reply(body={"ok": True}))
    for ctx, base, path in ((acme, tarpit.url, "/hang"), (globex, upstream.url, "/ok")):
        make_integration(ctx, "up", base, [{"name": "call", "method": "get", "path": path, "timeout": 60}])
    slow = workflow_services.workflow_create(tenant=acme.tenant, actor=acme.actor, document=workflow(
        "slow", [step("s", "call", timeout=60)], tools=[{"name": "call", "type": "integration", "params": {"integration": "up", "action": "call"}}]))
    fast = workflow_services.workflow_create(tenant=globex.tenant, actor=globex.actor, document=workflow(
        "fast", [step("s", "call")], tools=[{"name": "call", "type": "integration", "params": {"integration": "up", "action": "call"}}]))
    worker = Worker(BACKFLOW_EGRESS_ALLOW="127.0.0.1")
    try:
        hanging = workflow_services.run_create(tenant=acme.tenant, actor=acme.actor, workflow=slow)
        deadline = time.monotonic() + 20
        while WorkflowRun.all_tenants.get(pk=hanging.pk).status != WorkflowRun.Status.RUNNING:
            assert time.monotonic() < deadline, "the worker never picked up the slow run"
            time.sleep(0.1)
        queued = time.monotonic()
        run = workflow_services.run_create(tenant=globex.tenant, actor=globex.actor, workflow=fast)
        while WorkflowRun.all_tenants.get(pk=run.pk).status not in WorkflowRun.FINISHED:
            assert time.monotonic() - queued < 15, "the other tenant's run waited for the hanging one"
            time.sleep(0.1)
        assert WorkflowRun.all_tenants.get(pk=run.pk).status == WorkflowRun.Status.SUCCEEDED
        assert WorkflowRun.all_tenants.get(pk=hanging.pk).status == WorkflowRun.Status.RUNNING  # still stuck on the tarpit
    finally:
        worker.stop()
        tarpit.close()


def test_app_component_props_are_checked_and_a_stored_bad_one_renders(acme):
    """Found by the outside review: a pageSize of "x", null or a list was stored, then the public
    page answered an HTML 500."""
    from entities_app.models import App

    acme.client().post("/api/collections/", {"name": "things"}, format="json")
    app = {"id": "site", "name": "Site", "public": True, "pages": [{"path": "", "components": [
        {"type": "table", "props": {"pageSize": "x"}, "binding": {"collection": "things", "fields": ["name"]}}]}]}
    refused = acme.client().post("/api/apps/", app, format="json")
    assert refused.status_code == 400 and "pages[0].components[0].props.pageSize" in refused.json()["errors"], refused.content
    app["pages"][0]["components"][0]["props"]["pageSize"] = 10
    assert acme.client().post("/api/apps/", app, format="json").status_code == 201
    App.objects.for_tenant(acme.tenant).filter(slug="site").update(pages=[{"path": "", "title": "", "components": [
        {"type": "table", "props": {"pageSize": ["x"]}, "binding": {"collection": "things", "fields": ["name"]}}]}])
    assert acme.client().get("/apps/acme/site/").status_code == 200
