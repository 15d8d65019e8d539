"""Upstream faults and bad requests: each gives the documented status with a JSON error naming the
action, in bounded time and memory."""

import time
import tracemalloc

import pytest
from django.core.cache import cache

from integrations_app.tests.test_runtime_helpers import *  # noqa: F403 (fixtures and helpers)
from integrations_app.tests.test_runtime_helpers import Reply, free_port, make_integration, make_route

ENDPOINTS = [
    {"name": "fetch", "method": "get", "path": "/fetch"},
    {"name": "flaky", "method": "get", "path": "/flaky"},
    {"name": "flakyPost", "method": "post", "path": "/flaky"},
    {"name": "slow", "method": "get", "path": "/slow", "timeout": 0.5},
    {"name": "loop", "method": "get", "path": "/loop"},
    {"name": "huge", "method": "get", "path": "/huge"},
    {"name": "away", "method": "get", "path": "/away"},
]


def route(ctx, path, action, method="get", params=None, **extra):
    return make_route(ctx, path, [{"id": "call", "integration": "up", "action": action, "params": params or {}}],
                      method=method, requireAuth=False, **extra)


def error_of(response, status):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()["error"]


def test_upstream_down_is_a_502_naming_the_action(acme, inprocess):
    make_integration(acme, "up", f"http://127.0.0.1:{free_port()}", ENDPOINTS)  # nothing listens there
    route(acme, "/down", "fetch")
    started = time.monotonic()
    error = error_of(inprocess.call("GET", "/t/acme/down"), 502)
    assert "action 'call' (up.fetch)" in error and "cannot reach the upstream" in error
    assert time.monotonic() - started < 5


def test_slow_upstream_beyond_the_endpoint_timeout_is_a_504(acme, upstream, inprocess):
    upstream.on("GET", "/slow", Reply(body={"late": True}, delay=3))
    make_integration(acme, "up", upstream.url, ENDPOINTS)
    route(acme, "/slow", "slow")
    started = time.monotonic()
    error = error_of(inprocess.call("GET", "/t/acme/slow"), 504)
    elapsed = time.monotonic() - started
    assert "action 'call' (up.slow)" in error and "0.5 s" in error
    assert elapsed < 2, f"a 0.5 s endpoint timeout answered after {elapsed:.2f} s"
    assert len(upstream.calls("/slow")) == 1  # a timeout is not retried


def _fails_twice(status=503):
    count = {"n": 0}

    def handler(seen):
        count["n"] += 1
        return Reply(status, {"try": count["n"]}) if count["n"] <= 2 else Reply(body={"ok": True, "try": count["n"]})

    return handler


def test_get_is_retried_on_503(acme, upstream, inprocess):
    upstream.on("GET", "/flaky", _fails_twice())
    make_integration(acme, "up", upstream.url, ENDPOINTS)
    route(acme, "/flaky", "flaky")
    response = inprocess.call("GET", "/t/acme/flaky")
    assert response.status_code == 200, response.text
    assert response.json() == {"ok": True, "try": 3}
    assert len(upstream.calls("/flaky")) == 3


def test_post_is_not_retried(acme, upstream, inprocess):
    upstream.on("POST", "/flaky", _fails_twice())
    make_integration(acme, "up", upstream.url, ENDPOINTS)
    route(acme, "/flaky", "flakyPost", method="post", params={"n": 1})
    body = inprocess.call("POST", "/t/acme/flaky").json()
    assert body["upstreamStatus"] == 503 and "answered 503" in body["error"] and "'call'" in body["error"]
    assert len(upstream.calls("/flaky")) == 1


def test_non_json_body_with_a_json_content_type_is_a_502(acme, upstream, inprocess):
    upstream.on("GET", "/fetch", Reply(body=b"<html>oops</html>", headers={"Content-Type": "application/json; charset=utf-8"}))
    make_integration(acme, "up", upstream.url, ENDPOINTS)
    route(acme, "/fetch", "fetch")
    error = error_of(inprocess.call("GET", "/t/acme/fetch"), 502)
    assert "'call'" in error and "said JSON" in error


def test_text_answers_are_passed_as_strings(acme, upstream, inprocess):
    upstream.on("GET", "/fetch", Reply(body=b"plain words", headers={"Content-Type": "text/plain"}))
    make_integration(acme, "up", upstream.url, ENDPOINTS)
    route(acme, "/fetch", "fetch")
    response = inprocess.call("GET", "/t/acme/fetch")
    assert response.status_code == 200 and response.json() == "plain words"


def test_huge_upstream_body_is_a_502_in_bounded_memory(acme, upstream, inprocess, settings):
    settings.BACKFLOW_UPSTREAM_MAX_BYTES = 64 * 1024
    total = 256 * 1024 * 1024  # far more than the test could afford to buffer quickly
    chunk = b"x" * (1024 * 1024)
    upstream.on("GET", "/huge", lambda seen: Reply(body=(chunk for _ in range(total // len(chunk))), length=total,
                                                    headers={"Content-Type": "application/json"}))
    make_integration(acme, "up", upstream.url, ENDPOINTS)
    route(acme, "/huge", "huge")
    assert inprocess.call("GET", "/t/acme/warm-up").status_code == 404  # imports and tables before measuring
    tracemalloc.start()
    try:
        started = time.monotonic()
        response = inprocess.call("GET", "/t/acme/huge")
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    error = error_of(response, 502)
    assert "'call'" in error and "larger than 65536 bytes" in error
    assert elapsed < 10
    assert peak < 24 * 1024 * 1024, f"peak Python memory {peak / 2**20:.1f} MiB while refusing a huge answer"
    assert upstream.streamed < total


def test_redirect_loop_is_a_502(acme, upstream, inprocess):
    upstream.on("GET", "/loop", Reply(302, b"", headers={"Location": "/loop"}))
    make_integration(acme, "up", upstream.url, ENDPOINTS)
    route(acme, "/loop", "loop")
    error = error_of(inprocess.call("GET", "/t/acme/loop"), 502)
    assert "'call'" in error and "more than 5 redirects" in error
    assert len(upstream.calls("/loop")) == 6


def test_redirects_are_followed_and_credentials_stay_with_their_origin(acme, upstreams, inprocess):
    from integrations_app import services as integration_services

    home, elsewhere = upstreams(), upstreams()  # two origins (different ports)
    home.on("GET", "/away", Reply(302, b"", headers={"Location": "/here"}))
    home.on("GET", "/here", Reply(307, b"", headers={"Location": f"{elsewhere.url}/landing?from=home"}))
    integration_services.secret_create(tenant=acme.tenant, actor=acme.actor, name="tok", value="tok-origin-bound")
    make_integration(acme, "up", home.url, ENDPOINTS, auth={"type": "bearer", "secret": "tok"})
    route(acme, "/away", "away")
    response = inprocess.call("GET", "/t/acme/away")
    assert response.status_code == 200, response.text
    assert response.json()["path"] == "/landing" and response.json()["query"] == {"from": "home"}
    assert [s.headers.get("authorization") for s in home.calls()] == ["Bearer tok-origin-bound"] * 2
    landing = elsewhere.calls("/landing")[-1]
    assert "authorization" not in landing.headers, "the bearer token followed a redirect to another origin"


def test_bad_json_request_body_is_a_400(acme, upstream, inprocess):
    make_integration(acme, "up", upstream.url, ENDPOINTS)
    route(acme, "/fetch", "fetch", method="post")
    response = inprocess.call("POST", "/t/acme/fetch", content=b'{"name": ', headers={"Content-Type": "application/json"})
    assert "not well-formed JSON" in error_of(response, 400)
    assert not upstream.calls()


@pytest.mark.parametrize("where, request_kwargs, missing", [
    ("{{request.query.date}}", {}, "date"),
    ("{{request.body.customer.id}}", {"json": {"customer": {}}}, "id"),
])
def test_template_naming_a_missing_request_field_is_a_400_naming_it(acme, upstream, inprocess, where, request_kwargs, missing):
    make_integration(acme, "up", upstream.url, ENDPOINTS)
    route(acme, "/fetch", "fetch", method="post", params={"value": where})
    error = error_of(inprocess.call("POST", "/t/acme/fetch", **request_kwargs), 400)
    assert where in error and repr(missing) in error and "'call'" in error
    assert not upstream.calls()


def test_rate_limit_is_a_429_with_retry_after(acme, upstream, inprocess, settings):
    settings.BACKFLOW_ROUTE_RATE_LIMIT = (2, 60)
    make_integration(acme, "up", upstream.url, ENDPOINTS)
    route(acme, "/fetch", "fetch")

    async def thrice(http):
        return [await http.get("/t/acme/fetch") for _ in range(3)]

    for _ in range(2):  # once more if the minute (the rate window) turned during the calls
        window = int(time.time() // 60)
        cache.delete(f"ratelimit:routes:{acme.tenant.pk}:ip:127.0.0.1:{window}")  # a shared Redis may hold an earlier run's count
        before = len(upstream.calls("/fetch"))
        responses = inprocess.run(thrice)
        if int(time.time() // 60) == window:
            break
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert "Too many requests" in responses[2].json()["error"]
    assert 1 <= int(responses[2].headers["retry-after"]) <= 61
    assert len(upstream.calls("/fetch")) - before == 2  # the refused call never reached the upstream


def test_a_secret_that_no_longer_decrypts_is_a_502_naming_it(acme, upstream, inprocess):
    """The operator changed BACKFLOW_SECRETS_KEY without re-encrypting: a clear 502, not a crash."""
    from cryptography.fernet import Fernet

    from integrations_app import services as integration_services
    from integrations_app.models import Secret

    integration_services.secret_create(tenant=acme.tenant, actor=acme.actor, name="token", value="sk-old-key")
    Secret.objects.for_tenant(acme.tenant).filter(name="token").update(
        ciphertext=Fernet(Fernet.generate_key()).encrypt(b"sk-other-key").decode())
    make_integration(acme, "up", upstream.url, ENDPOINTS, auth={"type": "bearer", "secret": "token"})
    route(acme, "/locked", "fetch")
    error = error_of(inprocess.call("GET", "/t/acme/locked"), 502)
    assert "'token' cannot be decrypted" in error and "BACKFLOW_SECRETS_KEY" in error
    assert upstream.calls() == []


def test_an_upstream_that_never_answers_is_a_504_at_the_endpoints_timeout_retries_included(acme, upstream, inprocess):
    """It was a 502 "cannot reach the upstream (ReadTimeout)" after about 15 s: the client's own 5 s
    read timeout fired before the endpoint's, three times (one try and two retries)."""
    upstream.on("GET", "/never", Reply(body={"late": True}, delay=30))
    make_integration(acme, "up", upstream.url, [{"name": "never", "method": "get", "path": "/never", "timeout": 7}])
    route(acme, "/never", "never")
    started = time.monotonic()
    error = error_of(inprocess.call("GET", "/t/acme/never", timeout=40), 504)
    elapsed = time.monotonic() - started
    assert "did not answer within 7 s (the endpoint's timeout)" in error, error
    assert 6.5 < elapsed < 12, f"a 7 s endpoint timeout answered after {elapsed:.2f} s"


def test_the_default_timeout_bounds_the_whole_call_with_its_retries(acme, upstream, inprocess, settings):
    upstream.on("GET", "/flaky", Reply(status=503, body={"busy": True}, delay=4))
    make_integration(acme, "up", upstream.url, [{"name": "flaky", "method": "get", "path": "/flaky"}])  # default 10 s
    route(acme, "/flaky", "flaky")
    started = time.monotonic()
    response = inprocess.call("GET", "/t/acme/flaky", timeout=40)
    elapsed = time.monotonic() - started
    assert response.status_code == 504 and "retries included" in response.json()["error"], response.text
    assert elapsed < 14, f"the 10 s budget answered after {elapsed:.2f} s"
