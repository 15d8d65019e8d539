"""Every field rule of integrations and routes over REST: 400 naming the field path, 409 for
conflicts, 413 for oversize bodies, and nothing written after any refusal."""

import copy
import json

import pytest

from integrations_app.models import Integration, Route, Secret
from tenants.models import AuditEvent

DROP = object()  # marks a field to remove

INTEGRATION = {
    "name": "stripe",
    "displayName": "Stripe",
    "baseUrl": "https://api.stripe.com/v1",
    "auth": {"type": "bearer", "secret": "stripe_key"},
    "endpoints": [
        {"name": "listCharges", "method": "get", "path": "/charges", "query": {"limit": "{{params.limit}}"}},
        {"name": "getCharge", "method": "get", "path": "/charges/{id}"},
    ],
}

ROUTE = {
    "path": "/charges/{id}",
    "method": "get",
    "integrations": {"actions": [
        {"id": "charge", "integration": "stripe", "action": "getCharge", "params": {"id": "{{request.params.id}}"}},
    ]},
}


def changed(base, *edits):
    """A deep copy of base with (path tuple, value) edits applied; value DROP removes the field."""
    doc = copy.deepcopy(base)
    for path, value in edits:
        target = doc
        for part in path[:-1]:
            target = target[part]
        if value is DROP:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return doc


def counts(tenant):
    return (
        Integration.objects.for_tenant(tenant).count(),
        Route.objects.for_tenant(tenant).count(),
        Secret.objects.for_tenant(tenant).count(),
        AuditEvent.objects.for_tenant(tenant).count(),
    )


def rows(tenant):
    return (
        list(Integration.objects.for_tenant(tenant).values()),
        list(Route.objects.for_tenant(tenant).values()),
    )


def assert_names_field(response, field):
    assert response.status_code == 400, (field, response.status_code, response.content)
    body = response.json()
    assert body.get("detail"), body
    assert isinstance(body.get("errors"), dict) and body["errors"], body
    assert field in body["errors"], f"expected an error at {field!r}, got {body['errors']}"
    assert all(isinstance(m, str) and m for m in body["errors"][field]), body


# (id, document, field path the 400 must name)
INTEGRATION_CASES = [
    ("name-uppercase", changed(INTEGRATION, (("name",), "Stripe")), "name"),
    ("name-too-long", changed(INTEGRATION, (("name",), "a" * 64)), "name"),
    ("name-leading-dash", changed(INTEGRATION, (("name",), "-stripe")), "name"),
    ("name-leading-underscore", changed(INTEGRATION, (("name",), "_stripe")), "name"),
    ("name-empty", changed(INTEGRATION, (("name",), "")), "name"),
    ("name-space", changed(INTEGRATION, (("name",), "my api")), "name"),
    ("name-missing", changed(INTEGRATION, (("name",), DROP)), "name"),
    ("name-not-string", changed(INTEGRATION, (("name",), 5)), "name"),
    ("baseUrl-ftp", changed(INTEGRATION, (("baseUrl",), "ftp://files.example.com")), "baseUrl"),
    ("baseUrl-no-scheme", changed(INTEGRATION, (("baseUrl",), "api.stripe.com/v1")), "baseUrl"),
    ("baseUrl-relative", changed(INTEGRATION, (("baseUrl",), "/v1")), "baseUrl"),
    ("baseUrl-spaces", changed(INTEGRATION, (("baseUrl",), "https://api.stripe.com/v 1")), "baseUrl"),
    ("baseUrl-no-host", changed(INTEGRATION, (("baseUrl",), "https://")), "baseUrl"),
    ("baseUrl-missing", changed(INTEGRATION, (("baseUrl",), DROP)), "baseUrl"),
    ("baseUrl-template", changed(INTEGRATION, (("baseUrl",), "https://{{params.host}}/v1")), "baseUrl"),
    ("displayName-not-string", changed(INTEGRATION, (("displayName",), ["Stripe"])), "displayName"),
    ("auth-unknown-type", changed(INTEGRATION, (("auth",), {"type": "digest", "secret": "k"})), "auth.type"),
    ("auth-missing-type", changed(INTEGRATION, (("auth",), {"secret": "k"})), "auth.type"),
    ("auth-not-object", changed(INTEGRATION, (("auth",), "bearer")), "auth"),
    ("bearer-missing-secret", changed(INTEGRATION, (("auth",), {"type": "bearer"})), "auth.secret"),
    ("bearer-secret-looks-like-a-value", changed(INTEGRATION, (("auth",), {"type": "bearer", "secret": "sk_live_ABC123"})), "auth.secret"),
    ("basic-missing-username", changed(INTEGRATION, (("auth",), {"type": "basic", "secret": "pw"})), "auth.username"),
    ("basic-missing-secret", changed(INTEGRATION, (("auth",), {"type": "basic", "username": "bob"})), "auth.secret"),
    ("api_key-missing-name", changed(INTEGRATION, (("auth",), {"type": "api_key", "in": "header", "secret": "k"})), "auth.name"),
    ("api_key-missing-in", changed(INTEGRATION, (("auth",), {"type": "api_key", "name": "X-Key", "secret": "k"})), "auth.in"),
    ("api_key-bad-in", changed(INTEGRATION, (("auth",), {"type": "api_key", "name": "X-Key", "in": "cookie", "secret": "k"})), "auth.in"),
    ("oauth2-missing-tokenUrl", changed(INTEGRATION, (("auth",), {"type": "oauth2_client_credentials", "clientId": "c", "secret": "k"})), "auth.tokenUrl"),
    ("oauth2-missing-clientId", changed(INTEGRATION, (("auth",), {"type": "oauth2_client_credentials", "tokenUrl": "https://a.example/token", "secret": "k"})), "auth.clientId"),
    ("oauth2-bad-tokenUrl", changed(INTEGRATION, (("auth",), {"type": "oauth2_client_credentials", "tokenUrl": "token", "clientId": "c", "secret": "k"})), "auth.tokenUrl"),
    ("auth-part-unused-by-type", changed(INTEGRATION, (("auth",), {"type": "bearer", "secret": "k", "username": "bob"})), "auth.username"),
    ("auth-none-with-secret", changed(INTEGRATION, (("auth",), {"type": "none", "secret": "k"})), "auth.secret"),
    ("auth-unknown-part", changed(INTEGRATION, (("auth",), {"type": "bearer", "secret": "k", "password": "hunter2"})), "auth"),
    ("auth-env-over-rest", changed(INTEGRATION, (("auth",), {"type": "bearer", "secret": "{{env.STRIPE_KEY}}"})), "auth.secret"),
    ("endpoints-not-list", changed(INTEGRATION, (("endpoints",), "x")), "endpoints"),
    ("endpoint-not-object", changed(INTEGRATION, (("endpoints",), ["x"])), "endpoints[0]"),
    ("endpoint-bad-method", changed(INTEGRATION, (("endpoints", 0, "method"), "fetch")), "endpoints[0].method"),
    ("endpoint-method-not-string", changed(INTEGRATION, (("endpoints", 1, "method"), 1)), "endpoints[1].method"),
    ("endpoint-missing-method", changed(INTEGRATION, (("endpoints", 0, "method"), DROP)), "endpoints[0].method"),
    ("endpoint-path-no-slash", changed(INTEGRATION, (("endpoints", 1, "path"), "charges/{id}")), "endpoints[1].path"),
    ("endpoint-path-space", changed(INTEGRATION, (("endpoints", 0, "path"), "/char ges")), "endpoints[0].path"),
    ("endpoint-missing-name", changed(INTEGRATION, (("endpoints", 0, "name"), DROP)), "endpoints[0].name"),
    ("endpoint-bad-name", changed(INTEGRATION, (("endpoints", 0, "name"), "1list")), "endpoints[0].name"),
    ("endpoint-duplicate-name", changed(INTEGRATION, (("endpoints", 1, "name"), "listCharges")), "endpoints[1].name"),
    ("endpoint-unknown-field", changed(INTEGRATION, (("endpoints", 0, "notAField"), 5)), "endpoints[0]"),
    ("endpoint-headers-not-strings", changed(INTEGRATION, (("endpoints", 0, "headers"), {"X-N": 5})), "endpoints[0].headers.X-N"),
    ("endpoint-query-not-object", changed(INTEGRATION, (("endpoints", 0, "query"), "limit=5")), "endpoints[0].query"),
    ("endpoint-template-request-root", changed(INTEGRATION, (("endpoints", 0, "query"), {"limit": "{{request.x}}"})), "endpoints[0].query"),
    ("endpoint-template-steps-root", changed(INTEGRATION, (("endpoints", 1, "path"), "/charges/{{steps.a.result}}")), "endpoints[1].path"),
    ("endpoint-template-unbalanced", changed(INTEGRATION, (("endpoints", 0, "body"), {"a": "{{params.x"})), "endpoints[0].body"),
    ("endpoint-template-env-over-rest", changed(INTEGRATION, (("endpoints", 0, "headers"), {"X-Key": "{{env.KEY}}"})), "endpoints[0].headers"),
    ("unknown-top-level-field", changed(INTEGRATION, (("secretValue",), "sk_live")), "body"),
]


@pytest.mark.parametrize("document, field", [pytest.param(d, f, id=i) for i, d, f in INTEGRATION_CASES])
def test_integration_create_rules(acme, document, field):
    before = counts(acme.tenant)
    response = acme.client().post("/api/integrations/", document, format="json")
    assert_names_field(response, field)
    assert counts(acme.tenant) == before


def test_valid_auth_types_are_accepted(acme):
    client = acme.client()
    auths = [
        {"type": "none"},
        {"type": "bearer", "secret": "k"},
        {"type": "basic", "username": "bob", "secret": "pw"},
        {"type": "api_key", "name": "X-Key", "in": "query", "secret": "k"},
        {"type": "oauth2_client_credentials", "tokenUrl": "https://a.example/token", "clientId": "c", "secret": "k", "scopes": ["read"]},
    ]
    for index, auth in enumerate(auths):
        response = client.post("/api/integrations/", changed(INTEGRATION, (("name",), f"ok{index}"), (("auth",), auth)), format="json")
        assert response.status_code == 201, (auth, response.content)
        assert response.json()["auth"] == auth
    # Methods are stored lower-case.
    response = client.post("/api/integrations/", changed(INTEGRATION, (("name",), "upper"), (("endpoints", 0, "method"), "GET")), format="json")
    assert response.status_code == 201 and response.json()["endpoints"][0]["method"] == "get"


@pytest.mark.parametrize(
    "changes, field",
    [
        pytest.param({"baseUrl": "nope"}, "baseUrl", id="baseUrl"),
        pytest.param({"auth": {"type": "basic"}}, "auth.username", id="auth"),
        pytest.param({"endpoints": [{"name": "x", "method": "get", "path": "x"}]}, "endpoints[0].path", id="endpoint"),
        pytest.param({"endpoints": "x"}, "endpoints", id="endpoints-type"),
        pytest.param({"name": "renamed"}, "name", id="rename"),
        pytest.param({"name": 5}, "name", id="name-type"),
    ],
)
def test_integration_update_rules(acme, changes, field):
    client = acme.client()
    assert client.post("/api/integrations/", INTEGRATION, format="json").status_code == 201
    before, snapshot = counts(acme.tenant), rows(acme.tenant)
    assert_names_field(client.patch("/api/integrations/stripe/", changes, format="json"), field)
    assert_names_field(client.put("/api/integrations/stripe/", {**INTEGRATION, **changes}, format="json"), field)
    assert counts(acme.tenant) == before and rows(acme.tenant) == snapshot


def test_rename_is_refused(acme):
    client = acme.client()
    assert client.post("/api/integrations/", INTEGRATION, format="json").status_code == 201
    snapshot = rows(acme.tenant)
    response = client.put("/api/integrations/stripe/", {**INTEGRATION, "name": "stripe2"}, format="json")
    assert_names_field(response, "name")
    assert "renamed" in response.json()["errors"]["name"][0]
    assert rows(acme.tenant) == snapshot
    assert client.get("/api/integrations/stripe2/").status_code == 404
    # Sending the same name (or none, on PATCH) is fine.
    assert client.put("/api/integrations/stripe/", {**INTEGRATION, "displayName": "S"}, format="json").status_code == 200
    assert client.patch("/api/integrations/stripe/", {"displayName": "T"}, format="json").json()["displayName"] == "T"


@pytest.fixture
def with_integration(acme):
    assert acme.client().post("/api/integrations/", INTEGRATION, format="json").status_code == 201
    return acme


ROUTE_CASES = [
    ("path-no-slash", changed(ROUTE, (("path",), "charges/{id}")), "path"),
    ("path-trailing-slash", changed(ROUTE, (("path",), "/charges/{id}/")), "path"),
    ("path-empty", changed(ROUTE, (("path",), "")), "path"),
    ("path-bad-segment", changed(ROUTE, (("path",), "/char ges/{id}")), "path"),
    ("path-bad-segment-chars", changed(ROUTE, (("path",), "/charges?x/{id}")), "path"),
    ("path-empty-segment", changed(ROUTE, (("path",), "/charges//{id}")), "path"),
    ("path-bad-param", changed(ROUTE, (("path",), "/charges/{1d}")), "path"),
    ("path-partial-param", changed(ROUTE, (("path",), "/charges/x{id}")), "path"),
    ("path-duplicate-param", changed(ROUTE, (("path",), "/charges/{id}/refunds/{id}")), "path"),
    ("path-not-string", changed(ROUTE, (("path",), ["/charges"])), "path"),
    ("path-missing", changed(ROUTE, (("path",), DROP)), "path"),
    ("method-not-http", changed(ROUTE, (("method",), "fetch")), "method"),
    ("method-not-string", changed(ROUTE, (("method",), 5)), "method"),
    ("method-missing", changed(ROUTE, (("method",), DROP)), "method"),
    ("requireAuth-not-bool", changed(ROUTE, (("requireAuth",), "yes")), "requireAuth"),
    ("integrations-missing", changed(ROUTE, (("integrations",), DROP)), "integrations"),
    ("integrations-not-object", changed(ROUTE, (("integrations",), [])), "integrations"),
    ("actions-empty", changed(ROUTE, (("integrations", "actions"), [])), "integrations.actions"),
    ("actions-not-list", changed(ROUTE, (("integrations", "actions"), "x")), "integrations.actions"),
    ("action-missing-integration", changed(ROUTE, (("integrations", "actions", 0, "integration"), "paypal")), "integrations.actions[0].integration"),
    ("action-bad-integration-name", changed(ROUTE, (("integrations", "actions", 0, "integration"), "Pay Pal")), "integrations.actions[0].integration"),
    ("action-missing-endpoint", changed(ROUTE, (("integrations", "actions", 0, "action"), "refund")), "integrations.actions[0].action"),
    ("action-no-action-field", changed(ROUTE, (("integrations", "actions", 0, "action"), DROP)), "integrations.actions[0].action"),
    ("action-unknown-field", changed(ROUTE, (("integrations", "actions", 0, "notAField"), 3)), "integrations.actions[0]"),
    ("action-params-not-object", changed(ROUTE, (("integrations", "actions", 0, "params"), ["x"])), "integrations.actions[0].params"),
    ("action-duplicate-ids", changed(ROUTE, (("integrations", "actions"), [
        {"id": "a", "integration": "stripe", "action": "listCharges"},
        {"id": "a", "integration": "stripe", "action": "getCharge", "params": {"id": "{{request.params.id}}"}},
    ])), "integrations.actions[1].id"),
    ("action-duplicate-default-ids", changed(ROUTE, (("integrations", "actions"), [
        {"integration": "stripe", "action": "listCharges"},
        {"integration": "stripe", "action": "listCharges"},
    ])), "integrations.actions[1].id"),
    ("step-named-later", changed(ROUTE, (("integrations", "actions"), [
        {"id": "first", "integration": "stripe", "action": "getCharge", "params": {"id": "{{steps.second.result}}"}},
        {"id": "second", "integration": "stripe", "action": "listCharges"},
    ])), "integrations.actions[0].params"),
    ("step-named-itself", changed(ROUTE, (("integrations", "actions", 0, "params"), {"id": "{{steps.charge.result}}"})), "integrations.actions[0].params"),
    ("step-unknown", changed(ROUTE, (("integrations", "actions", 0, "params"), {"id": "{{steps.nope.result}}"})), "integrations.actions[0].params"),
    ("request-param-not-in-path", changed(ROUTE, (("path",), "/charges"), (("integrations", "actions", 0, "params"), {"id": "{{request.params.id}}"})), "integrations.actions[0].params"),
    ("request-unknown-part", changed(ROUTE, (("integrations", "actions", 0, "params"), {"id": "{{request.x}}"})), "integrations.actions[0].params"),
    ("template-unknown-root", changed(ROUTE, (("integrations", "actions", 0, "params"), {"id": "{{input.id}}"})), "integrations.actions[0].params"),
    ("template-env-over-rest", changed(ROUTE, (("integrations", "actions", 0, "params"), {"id": "{{env.HOME}}"})), "integrations.actions[0].params"),
    ("template-malformed", changed(ROUTE, (("integrations", "actions", 0, "params"), {"id": "{{request.params.id"})), "integrations.actions[0].params"),
    ("response-unknown-step", changed(ROUTE, (("response",), {"x": "{{steps.other.result}}"})), "response"),
    ("response-bad-request-param", changed(ROUTE, (("response",), "{{request.params.other}}")), "response"),
    ("unknown-top-level-field", changed(ROUTE, (("handler",), "x")), "body"),
]


@pytest.mark.parametrize("document, field", [pytest.param(d, f, id=i) for i, d, f in ROUTE_CASES])
def test_route_create_rules(with_integration, document, field):
    acme = with_integration
    before = counts(acme.tenant)
    response = acme.client().post("/api/routes/", document, format="json")
    assert_names_field(response, field)
    assert counts(acme.tenant) == before


def test_valid_route_templates_are_accepted(with_integration):
    client = with_integration.client()
    document = changed(ROUTE, (("integrations", "actions"), [
        {"id": "list", "integration": "stripe", "action": "listCharges", "params": {"limit": "{{request.query.limit}}"}},
        {"id": "one", "integration": "stripe", "action": "getCharge",
         "params": {"id": "{{request.params.id}}", "from": "{{steps.list.result}}", "h": "{{request.headers.x-trace}}"}},
    ]), (("response",), {"all": "{{steps.list.result}}", "one": "{{steps.one.result}}", "b": "{{request.body.x}}"}))
    response = client.post("/api/routes/", document, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["method"] == "get" and body["requireAuth"] is True
    # The action id defaults to the endpoint name.
    document = changed(ROUTE, (("method",), "post"), (("integrations", "actions"), [{"integration": "stripe", "action": "listCharges"}]))
    response = client.post("/api/routes/", document, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["integrations"]["actions"][0]["id"] == "listCharges"


@pytest.mark.parametrize("method", ["get", "GET", "Get"])
def test_duplicate_route_is_409(with_integration, method):
    client = with_integration.client()
    assert client.post("/api/routes/", changed(ROUTE, (("method",), "get")), format="json").status_code == 201
    before = counts(with_integration.tenant)
    response = client.post("/api/routes/", changed(ROUTE, (("method",), method)), format="json")
    assert response.status_code == 409, response.content
    assert response.json()["errors"]
    assert counts(with_integration.tenant) == before
    # Another method on the same path is a different route.
    assert client.post("/api/routes/", changed(ROUTE, (("method",), "POST")), format="json").status_code == 201


def test_route_update_into_a_taken_path_and_method_is_409(with_integration):
    client = with_integration.client()
    assert client.post("/api/routes/", ROUTE, format="json").status_code == 201
    other = client.post("/api/routes/", changed(ROUTE, (("method",), "delete")), format="json").json()
    snapshot = rows(with_integration.tenant)
    response = client.patch(f"/api/routes/{other['id']}/", {"method": "GET"}, format="json")
    assert response.status_code == 409, response.content
    response = client.put(f"/api/routes/{other['id']}/", changed(ROUTE, (("method",), "Get")), format="json")
    assert response.status_code == 409, response.content
    assert rows(with_integration.tenant) == snapshot


def test_route_update_rules(with_integration):
    client = with_integration.client()
    route = client.post("/api/routes/", ROUTE, format="json").json()
    before, snapshot = counts(with_integration.tenant), rows(with_integration.tenant)
    url = f"/api/routes/{route['id']}/"
    for changes, field in [
        ({"path": "/charges/{id}/"}, "path"),
        ({"method": "fetch"}, "method"),
        ({"path": "/charges"}, "integrations.actions[0].params"),
        ({"integrations": {"actions": [{"integration": "nope", "action": "getCharge"}]}}, "integrations.actions[0].integration"),
    ]:
        assert_names_field(client.patch(url, changes, format="json"), field)
        assert_names_field(client.put(url, {**ROUTE, **changes}, format="json"), field)
    assert counts(with_integration.tenant) == before and rows(with_integration.tenant) == snapshot


def test_removing_an_endpoint_used_by_a_route_is_409(with_integration):
    client = with_integration.client()
    assert client.post("/api/routes/", ROUTE, format="json").status_code == 201
    before, snapshot = counts(with_integration.tenant), rows(with_integration.tenant)
    kept = [INTEGRATION["endpoints"][0]]
    response = client.patch("/api/integrations/stripe/", {"endpoints": kept}, format="json")
    assert response.status_code == 409, response.content
    assert "GET /charges/{id}" in response.json()["detail"] and "endpoints" in response.json()["errors"]
    assert client.put("/api/integrations/stripe/", {**INTEGRATION, "endpoints": kept}, format="json").status_code == 409
    assert counts(with_integration.tenant) == before and rows(with_integration.tenant) == snapshot
    # Removing an endpoint no route uses is fine.
    assert client.patch("/api/integrations/stripe/", {"endpoints": [INTEGRATION["endpoints"][1]]}, format="json").status_code == 200


def test_deleting_an_integration_used_by_a_route_is_409(with_integration):
    client = with_integration.client()
    route = client.post("/api/routes/", ROUTE, format="json").json()
    before = counts(with_integration.tenant)
    response = client.delete("/api/integrations/stripe/")
    assert response.status_code == 409, response.content
    assert "GET /charges/{id}" in response.json()["detail"]
    assert counts(with_integration.tenant) == before
    assert client.delete(f"/api/routes/{route['id']}/").status_code == 204
    assert client.delete("/api/integrations/stripe/").status_code == 204


def test_duplicate_integration_is_409(with_integration):
    before = counts(with_integration.tenant)
    response = with_integration.client().post("/api/integrations/", {**INTEGRATION, "displayName": "Other"}, format="json")
    assert response.status_code == 409
    assert "name" in response.json()["errors"]
    assert counts(with_integration.tenant) == before


@pytest.mark.parametrize("url", ["/api/integrations/", "/api/routes/", "/api/secrets/"])
@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"name": "stripe", ', id="truncated"),
        pytest.param(b"{'name': 'stripe'}", id="single-quotes"),
        pytest.param(b"not json at all", id="text"),
        pytest.param(b'{"name": "a"} trailing', id="trailing-garbage"),
        pytest.param(b"\xff\xfe\x00", id="not-utf8"),
    ],
)
def test_malformed_json_is_400(acme, url, raw):
    before = counts(acme.tenant)
    response = acme.client().generic("POST", url, raw, content_type="application/json")
    assert_names_field(response, "body")
    assert counts(acme.tenant) == before


@pytest.mark.parametrize("url, field", [("/api/integrations/", "name"), ("/api/routes/", "path"), ("/api/secrets/", "name")])
def test_empty_body_names_the_required_fields(acme, url, field):
    before = counts(acme.tenant)
    response = acme.client().generic("POST", url, b"", content_type="application/json")
    assert_names_field(response, field)
    assert counts(acme.tenant) == before


@pytest.mark.parametrize("url", ["/api/integrations/", "/api/routes/", "/api/secrets/"])
@pytest.mark.parametrize(
    "body",
    [
        pytest.param([INTEGRATION], id="list"),
        pytest.param("stripe", id="string"),
        pytest.param(5, id="number"),
        pytest.param(None, id="null"),
    ],
)
def test_body_must_be_a_json_object(acme, url, body):
    before = counts(acme.tenant)
    response = acme.client().generic("POST", url, json.dumps(body), content_type="application/json")
    assert_names_field(response, "body")
    assert counts(acme.tenant) == before


def test_updates_need_a_json_object_too(with_integration):
    client = with_integration.client()
    snapshot = rows(with_integration.tenant)
    for method in ("PUT", "PATCH"):
        response = client.generic(method, "/api/integrations/stripe/", json.dumps([1]), content_type="application/json")
        assert_names_field(response, "body")
        response = client.generic(method, "/api/integrations/stripe/", b"{nope", content_type="application/json")
        assert_names_field(response, "body")
    assert rows(with_integration.tenant) == snapshot


@pytest.mark.parametrize("url", ["/api/integrations/", "/api/routes/", "/api/secrets/"])
def test_oversize_body_is_413(acme, url):
    before = counts(acme.tenant)
    big = {**INTEGRATION, "description": "x" * (1024 * 1024 + 10)}
    response = acme.client().generic("POST", url, json.dumps(big), content_type="application/json")
    assert response.status_code == 413, (response.status_code, response.content[:300])
    assert response.json()["detail"]
    assert counts(acme.tenant) == before


def test_oversize_update_is_413(with_integration):
    snapshot = rows(with_integration.tenant)
    big = json.dumps({"description": "x" * (1024 * 1024 + 10)})
    response = with_integration.client().generic("PATCH", "/api/integrations/stripe/", big, content_type="application/json")
    assert response.status_code == 413, (response.status_code, response.content[:300])
    assert rows(with_integration.tenant) == snapshot


def test_wrong_content_type_is_refused(acme):
    before = counts(acme.tenant)
    response = acme.client().generic("POST", "/api/integrations/", "name=stripe", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert counts(acme.tenant) == before


def test_unknown_fields_are_named_in_the_message(with_integration):
    client = with_integration.client()
    response = client.post("/api/integrations/", changed(INTEGRATION, (("name",), "other"), (("endpoints", 0, "notAField"), 5)), format="json")
    assert_names_field(response, "endpoints[0]")
    assert "notAField" in " ".join(response.json()["errors"]["endpoints[0]"])
    response = client.post("/api/routes/", changed(ROUTE, (("handler",), "x")), format="json")
    assert_names_field(response, "body")
    assert "handler" in " ".join(response.json()["errors"]["body"])


def test_options_answers_without_a_server_error(with_integration):
    """DRF's default OPTIONS metadata needs a serializer; document views have JSON Schemas instead."""
    client = with_integration.client()
    route = client.post("/api/routes/", ROUTE, format="json").json()
    assert client.post("/api/secrets/", {"name": "stripe_key", "value": "v"}, format="json").status_code == 201
    for url in ("/api/integrations/", "/api/integrations/stripe/", "/api/routes/", f"/api/routes/{route['id']}/",
                "/api/secrets/", "/api/secrets/stripe_key/", "/api/keys/", "/api/audit/"):
        response = client.options(url)
        assert response.status_code < 500, (url, response.status_code)
        assert response.status_code in (200, 403), (url, response.status_code)
