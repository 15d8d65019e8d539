"""Hostile JSON bodies on the REST API (issue 14): nested 100 000 deep, nested just past the limit,
NaN / Infinity / 1e999, and bodies over the size limit. Each is answered 400 (or 413) with JSON
naming the body — never a 500 — and nothing is stored.

The parse itself is backflow.jsonbody.parse_json, shared with the webhook view and the raw ASGI
apps; its own cases are at the end.
"""

import io
import json

import pytest
from django.core.exceptions import RequestDataTooBig
from rest_framework.exceptions import ParseError

from backflow.jsonbody import JsonNotJson, JsonTooDeep, depth_exceeds, parse_json
from backflow.parsers import JSONParser
from entities_app.models import Collection, Entity
from integrations_app.models import Integration
from tenants.models import AuditEvent


def nested(depth, leaf="1"):
    return "[" * depth + leaf + "]" * depth


def deep_object(depth):
    return '{"a":' * depth + "1" + "}" * depth


HOSTILE = {
    "100k-deep unclosed": "[" * 100_000,
    "100k-deep closed": nested(100_000),
    "10k-deep object": deep_object(10_000),
    "65 deep (one past the limit)": '{"name": "deep", "description": ' + nested(65) + "}",
    "NaN": '{"name": "nan", "schema": {"x": NaN}}',
    "Infinity": '{"name": "inf", "description": -Infinity}',
    "1e999": '{"name": "big", "schema": {"maximum": 1e999}}',
}


def stored(tenant):
    return (Collection.objects.for_tenant(tenant).count(), Entity.objects.for_tenant(tenant).count(),
            Integration.objects.for_tenant(tenant).count(), AuditEvent.objects.for_tenant(tenant).count())


def assert_body_refused(response, status=400):
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["detail"] and "body" in body["errors"], body
    return body


@pytest.fixture
def members(acme):
    assert acme.client().post("/api/collections/", {"name": "members"}, format="json").status_code == 201
    made = acme.client().post("/api/collections/members/entities/", {"data": {"name": "Ana"}}, format="json")
    assert made.status_code == 201
    return made.json()["id"]


@pytest.mark.parametrize("name", list(HOSTILE))
@pytest.mark.parametrize("method,url", [
    ("POST", "/api/collections/"),
    ("POST", "/api/integrations/"),
    ("POST", "/api/collections/members/entities/"),
    ("PATCH", "/api/collections/members/entities/{id}/"),
    ("PUT", "/api/collections/members/"),
])
def test_hostile_json_bodies_are_400_naming_the_body(acme, members, name, method, url):
    before = stored(acme.tenant)
    response = acme.client().generic(method, url.format(id=members), HOSTILE[name], content_type="application/json")
    body = assert_body_refused(response)
    if "deep" in name:
        assert "nested more than 64 levels" in body["detail"], body
    else:
        assert "not JSON" in body["detail"] or "out of range" in body["detail"], body
    assert stored(acme.tenant) == before
    assert Entity.objects.for_tenant(acme.tenant).get().data == {"name": "Ana"}


def test_deep_body_before_authentication_is_400_not_500(db):
    """The token endpoint parses the body of anyone: the attacker needs no account."""
    from rest_framework.test import APIClient

    response = APIClient().generic("POST", "/api/auth/token", "[" * 100_000, content_type="application/json")
    assert_body_refused(response)


def test_the_depth_limit_is_a_setting_and_the_limit_itself_is_accepted(acme, settings):
    document = {"name": "ok", "schema": None, "description": "x"}
    at_limit = json.dumps({**document, "description": "x"})  # depth 1
    assert acme.client().generic("POST", "/api/collections/", at_limit, content_type="application/json").status_code == 201
    # Entity data 64 levels deep (the body: {"data": <62 levels>} is 64) is stored and read back.
    value = 1
    for _ in range(62):
        value = [value]
    made = acme.client().post("/api/collections/ok/entities/", {"data": {"v": value}}, format="json")
    assert made.status_code == 201, made.content[:300]
    settings.BACKFLOW_JSON_MAX_DEPTH = 10
    refused = acme.client().post("/api/collections/ok/entities/", {"data": {"v": value}}, format="json")
    assert "nested more than 10 levels" in assert_body_refused(refused)["detail"]


def test_oversize_body_is_413_json(acme, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    before = stored(acme.tenant)
    response = acme.client().generic("POST", "/api/collections/", json.dumps({"name": "big", "description": "x" * 2000}),
                                     content_type="application/json")
    assert_body_refused(response, 413)
    assert stored(acme.tenant) == before


def test_parser_bounds_a_body_without_content_length(settings):
    """A chunked body has no Content-Length for Django to check: the parser reads at most the limit."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 200
    stream = io.BytesIO(b'{"a": "' + b"x" * 10_000 + b'"}')
    with pytest.raises(RequestDataTooBig):
        JSONParser().parse(stream, "application/json", {})
    assert stream.tell() == 201  # it stopped reading there
    with pytest.raises(ParseError, match="nested more than"):
        JSONParser().parse(io.BytesIO(nested(70).encode()), "application/json", {})  # 141 bytes
    assert JSONParser().parse(io.BytesIO(b'{"a": [1]}'), "application/json", {}) == {"a": [1]}


# -- backflow.jsonbody.parse_json ---------------------------------------------------------------------

@pytest.mark.parametrize("raw", ["[" * 100_000, nested(100_000), deep_object(100_000), nested(65), deep_object(65),
                                 '{"a": [' + nested(64) + "]}"])
def test_parse_json_refuses_deep_values_without_recursion_error(raw):
    with pytest.raises(JsonTooDeep, match="nested more than 64 levels"):
        parse_json(raw.encode())


def test_parse_json_accepts_the_limit_and_ordinary_json():
    assert parse_json(nested(64).encode()) is not None
    assert parse_json(deep_object(64)) is not None
    assert parse_json(b'{"a": [1, 2.5, "x", null, true, {"b": {}}]}') == {"a": [1, 2.5, "x", None, True, {"b": {}}]}
    assert parse_json(b"\xef\xbb\xbf{}") == {}
    assert parse_json(nested(5), limit=5) and not depth_exceeds([[[]]], 3) and depth_exceeds([[[[]]]], 3)
    assert parse_json(json.dumps({"text": "[{" * 100, "list": [[1]]})) == {"text": "[{" * 100, "list": [[1]]}  # brackets in text


@pytest.mark.parametrize("raw", [b"NaN", b'{"a": Infinity}', b"[-Infinity]", b"1e999", b"-1e400", b"1" * 5000,
                                 b"{nope", b"", b"\xff\xfe", b'{"a": 1} x'])
def test_parse_json_refuses_what_is_not_json(raw):
    with pytest.raises(JsonNotJson) as caught:
        parse_json(raw)
    assert isinstance(caught.value, ValueError) and str(caught.value)


def test_parse_json_takes_bytes_or_str_only():
    with pytest.raises(TypeError):
        parse_json(None)


def test_a_deep_registration_body_is_an_rfc_7591_error_not_a_500(db, client):
    """OAuth dynamic client registration is open to anyone; its library parsed a deep body into a
    RecursionError (an HTML 500)."""
    for body in (nested(100_000), '{"redirect_uris": ' + nested(100) + "}"):
        response = client.post("/o/register/", data=body, content_type="application/json")
        assert response.status_code == 400 and response.json()["error"] == "invalid_client_metadata", response.content
    from oauth2_provider.models import get_application_model

    assert not get_application_model().objects.exists()


LONE_SURROGATE = b'{"name": "x\\ud800", "data": {"name": "x\\ud800"}, "text": "\\udfff", "input": {"a": "\\ud800"}}'


def test_a_lone_surrogate_is_refused_on_every_door_and_never_stored(acme, client):
    """Found by the outside review: `"\\ud800"` (an escape JSON allows, which is not Unicode text) was
    stored by a webhook and an entity create, and every later read of it answered 500."""
    from entities_app import services as entity_services
    from workflows_app import services as workflow_services
    from workflows_app.models import WorkflowRun
    from workflows_app.tests.helpers import step, workflow

    entity_services.collection_create(tenant=acme.tenant, actor=acme.actor, document={"name": "notes"})
    wf = workflow_services.workflow_create(tenant=acme.tenant, actor=acme.actor, document=workflow(
        "hook", [step("s", "ask", {"prompt": "hi"})], tools=[{"name": "ask", "type": "llm_call", "params": {}}],
        triggers=[{"type": "webhook"}]))
    answers = [
        acme.client().generic("POST", "/api/collections/notes/entities/", LONE_SURROGATE, content_type="application/json"),
        acme.client().generic("POST", "/api/workflows/hook/runs/", LONE_SURROGATE, content_type="application/json"),
        client.generic("POST", wf.to_document()["webhookUrl"], LONE_SURROGATE, content_type="application/json"),
        client.generic("POST", "/o/register/", b'{"client_name": "\\ud800", "redirect_uris": ["https://a.example/cb"]}',
                       content_type="application/json"),
    ]
    for response in answers:
        assert response.status_code == 400 and "surrogate" in response.content.decode(), response.content
    assert not Entity.objects.for_tenant(acme.tenant).exists()
    assert not WorkflowRun.objects.for_tenant(acme.tenant).exists()
