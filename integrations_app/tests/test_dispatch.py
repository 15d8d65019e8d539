"""/t/<tenant>/<path>: matching, requireAuth, tenants kept apart, route changes picked up, and the
invocation log. Calls go through backflow.asgi.application in-process."""

import asyncio

import pytest

from backflow import asgi_utils
from backflow.asgi_utils import HttpError, check_host
from integrations_app import dispatch
from integrations_app import services as integration_services
from integrations_app.models import RouteInvocation
from integrations_app.tests.test_runtime_helpers import *  # noqa: F403 (fixtures and helpers)
from integrations_app.tests.test_runtime_helpers import BOOKINGS_ENDPOINTS, Reply, action, make_integration, make_route

# -- requireAuth ------------------------------------------------------------------------------------


def test_require_auth(acme, globex, acme_bookings, inprocess):
    make_route(acme, "/bookings", [action("list")])  # requireAuth defaults to true
    make_route(acme, "/open", [action("list")], requireAuth=False)
    jwt = acme.jwt()

    async def calls(http):
        return {
            "none": await http.get("/t/acme/bookings"),
            "garbage": await http.get("/t/acme/bookings", headers={"Authorization": "Bearer bf_nothere_xxxxxxxx"}),
            "basic": await http.get("/t/acme/bookings", headers={"Authorization": "Basic YTpi"}),
            "other tenant": await http.get("/t/acme/bookings", headers={"Authorization": f"Bearer {globex.key}"}),
            "own key": await http.get("/t/acme/bookings", headers={"Authorization": f"Bearer {acme.key}"}),
            "own jwt": await http.get("/t/acme/bookings", headers={"Authorization": f"Bearer {jwt}"}),
            "open": await http.get("/t/acme/open"),
        }

    got = inprocess.run(calls)
    for name in ("none", "garbage", "basic", "other tenant"):
        assert got[name].status_code == 401, (name, got[name].text)
        assert got[name].headers["www-authenticate"].startswith("Bearer")
        assert isinstance(got[name].json()["error"], str)
    assert globex.key not in got["other tenant"].text
    for name in ("own key", "own jwt", "open"):
        assert got[name].status_code == 200, (name, got[name].text)
    assert len(acme_bookings.calls("/bookings")) == 3  # refused calls never reach the upstream
    # the caller's credentials are not forwarded upstream
    assert all("authorization" not in seen.headers for seen in acme_bookings.calls())


def gathered(acme, inprocess, settings, monkeypatch, calls):
    """GET each of `calls` ((url, Authorization or None)…) at once while the tenant has one
    database thread, acme's /bookings (requireAuth) and /open (public) routes made, so that the
    requests gather in admission trips: (the answers, the trips' sizes, the sizes of their counts)."""
    settings.BACKFLOW_SYNC_THREADS_PER_TENANT = 1  # the tenant's requests queue for one slot: they gather
    make_route(acme, "/bookings", [action("list")])
    make_route(acme, "/open", [action("list")], requireAuth=False)
    trips, sizes, counts = dispatch.routes_asgi.sites._admissions, [], []
    run, count = trips._run, dispatch.retry_after_each
    monkeypatch.setattr(trips, "_run", lambda owner, calls: sizes.append(len(calls)) or run(owner, calls))
    monkeypatch.setattr(dispatch, "retry_after_each", lambda keys, *args, **kwargs: counts.append(len(keys)) or count(keys, *args, **kwargs))

    async def together(http):
        return await asyncio.gather(*(http.get(url, headers={"Authorization": auth} if auth else {}) for url, auth in calls))

    answers = inprocess.run(together)
    assert max(sizes) > 1 and sum(sizes) == len(calls), sizes  # they did come together
    return answers, sizes, counts


def test_requests_admitted_together_each_get_their_own_verdict(acme, globex, acme_bookings, inprocess, settings, monkeypatch):
    """A tenant's requests that come together are admitted in one trip to a thread (one read of the
    tenant row): each still gets its own verdict, and a refused one costs the others nothing."""
    own, other, garbage = (f"Bearer {key}" for key in (acme.key, globex.key, "bf_nothere_xxxxxxxx"))
    calls = [("/t/acme/bookings", own), ("/t/acme/bookings", garbage), ("/t/acme/open", None), ("/t/acme/bookings", other),
             ("/t/acme/nothing", own), ("/t/acme/bookings", None), ("/t/nobody/bookings", own), ("/t/acme/bookings", own)] * 3
    got, _, _ = gathered(acme, inprocess, settings, monkeypatch, calls)
    assert [answer.status_code for answer in got] == [200, 401, 200, 401, 404, 401, 404, 200] * 3, [a.text for a in got]
    assert len(acme_bookings.calls("/bookings")) == 9  # the refused never reach the upstream


def test_requests_admitted_together_are_counted_together_each_against_its_callers_budget(
        acme, acme_bookings, inprocess, settings, monkeypatch):
    """The rate-limit counts of a trip's requests are made in one go at its end (on Redis, one
    round trip), each against its own caller's budget in the order the requests came: past it, 429
    with Retry-After."""
    settings.BACKFLOW_ROUTE_RATE_LIMIT = (3, 3600)
    calls = [("/t/acme/bookings", f"Bearer {acme.key}"), ("/t/acme/open", None)] * 5
    got, sizes, counts = gathered(acme, inprocess, settings, monkeypatch, calls)
    # the key's budget and the client address's (the open route's anonymous caller) are each 3
    assert [answer.status_code for answer in got] == [200, 200] * 3 + [429, 429] * 2, [a.status_code for a in got]
    assert all(0 < int(answer.headers["retry-after"]) <= 3601 for answer in got if answer.status_code == 429)
    assert sorted(counts) == sorted(sizes), (sizes, counts)


# -- matching ----------------------------------------------------------------------------------


def test_unknown_path_tenant_and_method(acme, acme_bookings, inprocess):
    make_route(acme, "/bookings", [action("list")], requireAuth=False)
    make_route(acme, "/bookings", [action("create")], method="post", requireAuth=False)

    async def calls(http):
        return (await http.get("/t/acme/nothing/here"), await http.get("/t/nobody/bookings"),
                await http.delete("/t/acme/bookings"), await http.get("/t/acme/bookings/"))

    unknown, no_tenant, wrong_method, trailing = inprocess.run(calls)
    assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/json"
    assert "No route matches GET /nothing/here" in unknown.json()["error"]
    assert no_tenant.status_code == 404 and "nobody" in no_tenant.json()["error"]
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "GET, POST"
    assert "DELETE" in wrong_method.json()["error"]
    assert trailing.status_code == 200
    assert not [s for s in acme_bookings.calls() if s.method != "GET"]


def test_static_segment_wins_over_a_param(acme, acme_bookings, inprocess):
    make_route(acme, "/bookings/{id}", [action("get", {"id": "{{request.params.id}}"})], requireAuth=False)
    make_route(acme, "/bookings/new", [action("new")], requireAuth=False)
    make_route(acme, "/{kind}/{id}", [action("get", {"id": "{{request.params.kind}}-{{request.params.id}}"})], requireAuth=False)

    async def calls(http):
        return [(await http.get(path)).json()["path"] for path in
                ("/t/acme/bookings/new", "/t/acme/bookings/42", "/t/acme/rooms/7")]

    assert inprocess.run(calls) == ["/bookings/new-form", "/bookings/42", "/bookings/rooms-7"]


def test_host_header_must_be_allowed(acme, acme_bookings, inprocess):
    make_route(acme, "/bookings", [action("list")], requireAuth=False)
    response = inprocess.call("GET", "/t/acme/bookings", headers={"Host": "evil.example"})
    assert response.status_code == 421 and not acme_bookings.calls()


def test_allowed_hosts_are_remembered_only_under_the_setting_and_within_a_bound(settings):
    """check_host remembers Host values it allowed: a host dropped from ALLOWED_HOSTS is refused at
    once, and a wildcard entry (any number of names) remembers at most _REMEMBERED_HOSTS of them."""
    settings.ALLOWED_HOSTS = ["api.example.com", ".tenants.example.com"]
    check_host({"host": "api.example.com"})
    check_host({"host": "api.example.com:8443"})
    settings.ALLOWED_HOSTS = [".tenants.example.com"]
    for host in ("api.example.com", "api.example.com:8443"):
        with pytest.raises(HttpError) as refused:
            check_host({"host": host})
        assert refused.value.status == 421
    for index in range(asgi_utils._REMEMBERED_HOSTS + 50):
        check_host({"host": f"t{index}.tenants.example.com"})
    assert len(asgi_utils._allowed_hosts.get()) == asgi_utils._REMEMBERED_HOSTS
    check_host({"host": f"t{asgi_utils._REMEMBERED_HOSTS + 49}.tenants.example.com"})  # past the bound: checked, still allowed
    with pytest.raises(HttpError):
        check_host({"host": "tenants.example.com.evil.example"})


# -- tenants ------------------------------------------------------------------------------------------


def test_two_tenants_with_the_same_route_path_stay_apart(acme, globex, upstreams, inprocess):
    for ctx in (acme, globex):
        up = upstreams()
        up.on("GET", "/me", Reply(body={"tenant": ctx.tenant.slug}))
        ctx.up = up
        integration_services.secret_create(tenant=ctx.tenant, actor=ctx.actor, name="token", value=f"secret-of-{ctx.tenant.slug}")
        make_integration(ctx, "crm", up.url, [{"name": "me", "method": "get", "path": "/me"}],
                         auth={"type": "bearer", "secret": "token"})
        make_route(ctx, "/whoami", [{"id": "me", "integration": "crm", "action": "me"}])

    async def calls(http):
        return {ctx.tenant.slug: await http.get(f"/t/{ctx.tenant.slug}/whoami", headers={"Authorization": f"Bearer {ctx.key}"})
                for ctx in (acme, globex)}

    got = inprocess.run(calls)
    assert got["acme"].json() == {"tenant": "acme"} and got["globex"].json() == {"tenant": "globex"}
    assert [s.headers["authorization"] for s in acme.up.calls()] == ["Bearer secret-of-acme"]
    assert [s.headers["authorization"] for s in globex.up.calls()] == ["Bearer secret-of-globex"]


def test_a_route_changed_via_rest_is_served_by_the_next_call(acme, acme_bookings, inprocess, django_capture_on_commit_callbacks):
    route = make_route(acme, "/bookings", [action("list")], requireAuth=False)
    first = inprocess.call("GET", "/t/acme/bookings")
    assert first.json()["path"] == "/bookings"

    with django_capture_on_commit_callbacks(execute=True):  # the version bump runs after commit
        response = acme.client().patch(f"/api/routes/{route['id']}/", {
            "integrations": {"actions": [action("get", {"id": "changed"})]}, "response": {"was": "{{steps.get.result.path}}"},
        }, format="json")
    assert response.status_code == 200, response.content
    assert inprocess.call("GET", "/t/acme/bookings").json() == {"was": "/bookings/changed"}

    with django_capture_on_commit_callbacks(execute=True):
        assert acme.client().delete(f"/api/routes/{route['id']}/").status_code == 204
    assert inprocess.call("GET", "/t/acme/bookings").status_code == 404


# -- invocation log ---------------------------------------------------------------------------------


def test_invocations_record_status_and_timing_not_bodies(acme, upstream, inprocess):
    upstream.on("POST", "/bookings", Reply(201, {"booking": "CONFIDENTIAL-ANSWER"}, delay=0.2))
    upstream.on("GET", "/bookings", Reply(503, {"error": "maintenance"}))
    make_integration(acme, "bookings", upstream.url, BOOKINGS_ENDPOINTS)
    ok = make_route(acme, "/book", [action("create", {"note": "{{request.body.note}}"})], method="post", requireAuth=False)
    failing = make_route(acme, "/bookings", [action("list", {"q": "{{request.query.q}}"})], requireAuth=False)

    async def calls(http):
        return (await http.post("/t/acme/book?q=PRIVATE-QUERY", json={"note": "PRIVATE-BODY"}),
                await http.get("/t/acme/bookings?q=PRIVATE-QUERY"),
                await http.get("/t/acme/missing"))

    created, failed, missing = inprocess.run(calls)
    assert created.status_code == 200 and failed.status_code == 502 and missing.status_code == 404
    rows = {str(row.route_id): row for row in RouteInvocation.objects.for_tenant(acme.tenant)}
    assert set(rows) == {ok["id"], failing["id"]}  # an unmatched path is not a route invocation
    good, bad = rows[ok["id"]], rows[failing["id"]]
    assert (good.method, good.path, good.status, good.error) == ("post", "/book", 200, "")
    assert good.duration_ms >= 200
    assert (bad.method, bad.path, bad.status) == ("get", "/bookings", 502)
    assert "answered 503" in bad.error and 0 < bad.duration_ms < 5000
    for row in rows.values():
        values = " ".join(str(getattr(row, f.attname)) for f in RouteInvocation._meta.concrete_fields)
        for private in ("PRIVATE-BODY", "PRIVATE-QUERY", "CONFIDENTIAL-ANSWER", "maintenance"):
            assert private not in values
