"""Tenant input is data (issue 14, holes 1 and 4): a value from a caller, a workflow input, a
webhook body or a step result is inserted once, encoded where it goes, and never rendered again.

Each test is the attacker's request through one door that reaches the template code: a public
tenant route, a webhook, a run's input over REST and MCP, an earlier step's result. The upstream
is a loopback server of the test that records the raw request it receives. What must never
happen: a value read from the process environment or settings (`SECRET_KEY`,
`BACKFLOW_SECRETS_KEY`, any variable) reaching an upstream, an answer or a stored record; a path
value climbing out of its segment; a header split by CR/LF. The property test at the end throws
arbitrary strings at the same route.
"""

import json
import logging
import os
from urllib.parse import quote, unquote

import pytest
from django.conf import settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from backflow.templating import TemplateError, local_environment, operator_environment, path_segment, render
from integrations_app.models import RouteInvocation
from integrations_app.tests.test_runtime_helpers import Reply, make_integration, make_route
from integrations_app.tests.test_runtime_helpers import _fresh_route_tables, inprocess, tripwire  # noqa: F401 (fixtures)
from mcp_app.http import connection_for
from mcp_app.tests.helpers import result_json
from tenants.authentication import principal_for_token
from tests.security.test_mcp_fuzz import fuzz_session
from workflows_app import engine
from workflows_app import services as workflow_services
from workflows_app.models import StepRun, WorkflowRun
from workflows_app.tests.helpers import step, workflow

CANARY = "canary-value-5f0c1e9d"  # an ordinary environment variable: no tenant template may read it either
ATTACKS = [
    "{{env.SECRET_KEY}}", "{{env.BACKFLOW_SECRETS_KEY}}", "{{env.BF_CANARY}}", "x{{env.SECRET_KEY}}y",
    "{{ env.SECRET_KEY }}", "{id}", "{{params.id}}", "{{request.query.id}}", "{{steps.first.result}}",
    "../../admin/x", "..", ".", "./.", "%2e%2e", "%2F..%2Fadmin", "a/b?c=d#e", "x\r\nX-Injected: 1", "\x00",
]
ITEM_ENDPOINTS = [
    {"name": "item", "method": "get", "path": "/items/{id}"},
    {"name": "itemByTemplate", "method": "get", "path": "/items/{{params.id}}/detail"},
    {"name": "store", "method": "post", "path": "/store", "body": {"value": "{{params.id}}", "note": "got {{params.id}}"}},
]


@pytest.fixture(autouse=True)
def _canary(monkeypatch):
    monkeypatch.setenv("BF_CANARY", CANARY)


def secrets_of_the_platform():
    values = {settings.SECRET_KEY, settings.BACKFLOW_SECRETS_KEY, CANARY}
    values |= {value for name, value in os.environ.items() if len(value) >= 12 and name in ("DATABASE_URL", "REDIS_URL")}
    return values


def assert_nothing_leaked(*texts):
    for text in texts:
        blob = text if isinstance(text, str) else json.dumps(text, default=str)
        for secret in secrets_of_the_platform():
            assert secret not in blob, f"a platform secret leaked: {blob[:300]}"


def raw_of(seen):
    return json.dumps({"path": seen.path, "query": seen.query, "headers": seen.headers, "body": seen.body.decode(errors="replace")})


def one_segment(raw_path, prefix, value, suffix=""):
    """The upstream saw `value` as exactly one encoded segment after `prefix`."""
    assert raw_path.startswith(prefix) and raw_path.endswith(suffix), raw_path
    segment = raw_path[len(prefix):len(raw_path) - len(suffix)]
    assert "/" not in segment and "?" not in segment and "#" not in segment, raw_path
    assert segment not in (".", ".."), raw_path
    assert unquote(segment) == value, (raw_path, value)


# -- the public tenant route -------------------------------------------------------------------


@pytest.fixture
def item_route(acme, upstream):
    upstream.on("GET", "/items", Reply(status=404, body={"error": "climbed out"}))
    make_integration(acme, "shop", upstream.url, ITEM_ENDPOINTS)
    make_route(acme, "/item", [{"id": "get", "integration": "shop", "action": "item", "params": {"id": "{{request.query.id}}"}}],
               requireAuth=False)
    make_route(acme, "/item/{id}", [{"id": "get", "integration": "shop", "action": "itemByTemplate",
                                     "params": {"id": "{{request.params.id}}"}}], requireAuth=False)
    make_route(acme, "/store", [{"id": "put", "integration": "shop", "action": "store", "params": {"id": "{{request.body.id}}"}}],
               method="post", requireAuth=False)
    return upstream


@pytest.mark.parametrize("value", ATTACKS)
def test_a_public_route_sends_a_query_value_as_one_path_segment_never_rendered(item_route, inprocess, value):
    response = inprocess.call("GET", "/t/acme/item", params={"id": value})
    assert response.status_code == 200, response.text  # CR/LF and NUL too: encoded (%0D%0A, %00), nothing split
    [seen] = item_route.calls()
    one_segment(seen.path, "/items/", value)
    assert_nothing_leaked(raw_of(seen), response.text)


@pytest.mark.parametrize("value", ["{{env.SECRET_KEY}}", "..", "a%2Fb", "{{request.query.x}}"])
def test_a_path_parameter_of_the_route_is_one_segment_upstream(item_route, inprocess, value):
    response = inprocess.call("GET", f"/t/acme/item/{quote(value, safe='')}", params={"x": "{{env.SECRET_KEY}}"})
    if value == "..":  # the route's own path matching: /t/acme/item/.. is not /item/{id}
        assert response.status_code in (200, 404), response.text
        if response.status_code == 404:
            return
    assert response.status_code == 200, response.text
    [seen] = item_route.calls()
    one_segment(seen.path, "/items/", value, "/detail")
    assert_nothing_leaked(raw_of(seen), response.text)


@pytest.mark.parametrize("value", ATTACKS)
def test_a_json_body_value_stays_a_value_in_the_upstream_body(item_route, inprocess, value):
    response = inprocess.call("POST", "/t/acme/store", json={"id": value})
    assert response.status_code == 200, response.text
    [seen] = item_route.calls("/store")
    assert seen.json == {"value": value, "note": f"got {value}"}
    assert_nothing_leaked(raw_of(seen), response.text)


def test_a_value_with_a_line_break_never_splits_an_upstream_header(acme, upstream, inprocess):
    make_integration(acme, "hdr", upstream.url, [{"name": "get", "method": "get", "path": "/h", "headers": {"X-Item": "{{params.id}}"}}])
    make_route(acme, "/h", [{"id": "get", "integration": "hdr", "action": "get", "params": {"id": "{{request.query.id}}"}}],
               requireAuth=False)
    for value in ("x\r\nX-Injected: 1", "x\nX-Injected: 1", "x\x00y", "x\x01y"):
        response = inprocess.call("GET", "/t/acme/h", params={"id": value})
        assert response.status_code == 400 and "X-Item" in response.json()["error"], response.text
    assert upstream.calls() == []
    response = inprocess.call("GET", "/t/acme/h", params={"id": " café {{env.SECRET_KEY}} "})
    assert response.status_code == 200, response.text
    [seen] = upstream.calls()
    assert seen.headers["x-item"].encode("latin-1").decode("utf-8") == "café {{env.SECRET_KEY}}"
    assert "x-injected" not in seen.headers


def test_an_empty_path_value_is_refused_not_sent_to_another_resource(item_route, inprocess):
    response = inprocess.call("GET", "/t/acme/item", params={"id": ""})
    assert response.status_code == 400 and "empty" in response.json()["error"], response.text
    assert item_route.calls() == []


def test_a_stored_env_placeholder_resolves_nowhere_in_tenant_mode_and_is_no_oracle(acme, upstream, inprocess):
    """Validation refuses {{env.…}} in tenant documents; a row that holds one anyway (written before
    that rule, or by hand) renders to the same refusal whether or not the variable exists."""
    from integrations_app.models import Route

    make_integration(acme, "shop", upstream.url, ITEM_ENDPOINTS)
    make_route(acme, "/set", [{"id": "get", "integration": "shop", "action": "item", "params": {"id": "x"}}], requireAuth=False)
    make_route(acme, "/unset", [{"id": "get", "integration": "shop", "action": "item", "params": {"id": "x"}}], requireAuth=False)
    for path, variable in (("/set", "SECRET_KEY"), ("/unset", "NOT_A_VARIABLE_HERE")):
        row = Route.objects.for_tenant(acme.tenant).get(path=path)
        row.actions[0]["params"]["id"] = "{{env.%s}}" % variable
        row.save()
    answers = {path: inprocess.call("GET", f"/t/acme{path}").json()["error"] for path in ("/set", "/unset")}
    assert answers["/set"].replace("SECRET_KEY", "X") == answers["/unset"].replace("NOT_A_VARIABLE_HERE", "X"), answers
    assert upstream.calls() == []
    assert_nothing_leaked(answers)


def test_env_is_not_ambient():
    with pytest.raises(TemplateError) as set_one:
        render("{{env.SECRET_KEY}}", {})
    with pytest.raises(TemplateError) as unset_one:
        render("{{env.NO_SUCH_VARIABLE}}", {})
    assert str(set_one.value).replace("SECRET_KEY", "X") == str(unset_one.value).replace("NO_SUCH_VARIABLE", "X")
    # Operator configuration reads the environment, but never Backflow's own settings.
    with pytest.raises(TemplateError):
        render("{{env.SECRET_KEY}}", {}, env=operator_environment())
    with pytest.raises(TemplateError):
        render("{{env.BACKFLOW_SECRETS_KEY}}", {}, env=operator_environment())
    assert render("{{env.BF_CANARY}}", {}, env=operator_environment()) == CANARY
    # Local mode: the developer's own environment.
    assert render("{{env.BF_CANARY}}", {}, env=local_environment()) == CANARY


def test_a_value_is_never_rendered_a_second_time():
    context = {"input": {"a": "{{input.b}}", "b": "secret-b"}, "params": {"id": "{{env.BF_CANARY}}"}}
    assert render("{{input.a}}", context) == "{{input.b}}"
    assert render("x {{input.a}} y", context) == "x {{input.b}} y"
    assert render({"k": ["{{params.id}}"]}, context) == {"k": ["{{env.BF_CANARY}}"]}
    assert path_segment("..") == "%2E%2E" and path_segment(".x") == "%2Ex" and path_segment("a.b") == "a.b"
    assert path_segment("a/b?c#d\r\n") == "a%2Fb%3Fc%23d%0D%0A"


# -- webhooks, run inputs and step results ----------------------------------------------------


def _item_workflow(ctx, slug, upstream, steps=None, triggers=None):
    make_integration(ctx, "shop", upstream.url, ITEM_ENDPOINTS + [
        {"name": "first", "method": "get", "path": "/first"},
    ])
    tools = [
        {"name": "getItem", "type": "integration", "params": {"integration": "shop", "action": "item"}},
        {"name": "storeItem", "type": "integration", "params": {"integration": "shop", "action": "store"}},
        {"name": "getFirst", "type": "integration", "params": {"integration": "shop", "action": "first"}},
    ]
    steps = steps or [step("get", "getItem", {"id": "{{input.id}}"}), step("store", "storeItem", {"id": "{{input.id}}"})]
    return workflow_services.workflow_create(tenant=ctx.tenant, actor=ctx.actor, document=workflow(slug, steps, tools=tools, triggers=triggers))


def _check_run(run_id, upstream, value):
    assert engine.execute(run_id) == WorkflowRun.Status.SUCCEEDED, WorkflowRun.all_tenants.get(pk=run_id).error
    [item] = [s for s in upstream.calls() if s.path.startswith("/items/")]
    one_segment(item.path, "/items/", value)
    [stored] = upstream.calls("/store")
    assert stored.json == {"value": value, "note": f"got {value}"}
    run = WorkflowRun.all_tenants.get(pk=run_id)
    assert_nothing_leaked(raw_of(item), raw_of(stored), run.output, run.error,
                          [(s.params, s.result, s.error) for s in StepRun.all_tenants.filter(run_id=run_id)])


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("value", ["{{env.SECRET_KEY}}", "../../admin/x", "{{steps.get.result}}"])
def test_a_webhook_body_value_is_data(acme, upstream, settings, value):
    settings.BACKFLOW_EGRESS_ALLOW = ["127.0.0.1"]
    wf = _item_workflow(acme, "hook", upstream, triggers=[{"type": "webhook"}])
    response = APIClient().post(wf.to_document()["webhookUrl"], {"id": value}, format="json")
    assert response.status_code == 202, response.content
    _check_run(response.json()["runId"], upstream, value)


@pytest.mark.django_db(transaction=True)
def test_a_run_input_is_data_over_rest_and_mcp(acme, upstream, settings):
    settings.BACKFLOW_EGRESS_ALLOW = ["127.0.0.1"]
    _item_workflow(acme, "runme", upstream)
    value = "{{env.BACKFLOW_SECRETS_KEY}}/../x"
    response = acme.client().post("/api/workflows/runme/runs/", {"input": {"id": value}}, format="json")
    assert response.status_code in (201, 202), response.content
    _check_run(response.json()["id"], upstream, value)

    upstream.seen.clear()
    with fuzz_session(connection_for(principal_for_token(acme.key))) as session:
        result = session.call("run_workflow", {"id": "runme", "input": {"id": value}, "wait": 0})
    assert not result.is_error, result
    _check_run(result_json(result)["id"], upstream, value)


@pytest.mark.django_db(transaction=True)
def test_a_step_result_is_data_for_the_next_step(acme, upstream, settings):
    settings.BACKFLOW_EGRESS_ALLOW = ["127.0.0.1"]
    value = "{{env.SECRET_KEY}}/../../admin"
    upstream.on("GET", "/first", Reply(body={"id": value}))
    steps = [step("first", "getFirst"), step("get", "getItem", {"id": "{{steps.first.result.id}}"}),
             step("store", "storeItem", {"id": "{{steps.first.result.id}}"})]
    wf = _item_workflow(acme, "chain", upstream, steps=steps)
    run = workflow_services.run_create(tenant=acme.tenant, actor=acme.actor, workflow=wf)
    _check_run(run.id, upstream, value)


# -- any string a caller can send ---------------------------------------------------------------

CALLER_STRINGS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(ATTACKS),
    st.lists(st.sampled_from(ATTACKS + ["/", "%", "{", "}", "..", "\r", "\n", "é", " "]), max_size=6).map("".join),
)


@pytest.fixture
def property_route(acme, upstream):
    make_integration(acme, "all", upstream.url, [{
        "name": "everywhere", "method": "post", "path": "/v/{id}/x/{{params.id}}", "query": {"q": "{{params.id}}"},
        "headers": {"X-Value": "{{params.id}}"}, "body": {"value": "{{params.id}}"},
    }])
    make_route(acme, "/p", [{"id": "go", "integration": "all", "action": "everywhere", "params": {"id": "{{request.query.id}}"}}],
               requireAuth=False)
    return upstream


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(value=CALLER_STRINGS)
def test_any_caller_string_reaches_the_upstream_only_as_an_encoded_value(property_route, inprocess, caplog, value):
    property_route.seen.clear()
    with caplog.at_level(logging.DEBUG):
        response = inprocess.call("GET", "/t/acme/p", params={"id": value})
    calls = property_route.calls()
    header_value = value.strip(" \t")
    if value == "" or any(ord(c) < 32 and c != "\t" or c == "\x7f" for c in header_value):
        assert response.status_code == 400, (value, response.text)  # an empty segment, or a header it would split
        assert calls == []
    else:
        assert response.status_code == 200, (value, response.text)
        [seen] = calls
        prefix, middle, suffix = "/v/", "/x/", ""
        first, _, second = seen.path[len(prefix):].partition(middle)
        one_segment(prefix + first, prefix, value)
        one_segment(middle + second, middle, value, suffix)
        assert seen.query == {"q": value}
        assert seen.headers["x-value"].encode("latin-1").decode("utf-8") == header_value
        assert seen.json == {"value": value}
        assert_nothing_leaked(raw_of(seen))
    assert_nothing_leaked(response.text, caplog.text,
                          list(RouteInvocation.objects.for_tenant(property_route_tenant()).values_list("path", "error")))


def property_route_tenant():
    from tenants.models import Tenant

    return Tenant.objects.get(slug="acme")
