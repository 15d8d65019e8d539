"""Hostile bodies on a workflow's webhook (issue 14): the caller only needs the webhook's URL.

A body nested 100 000 deep was a RecursionError (an HTML 500 page), and one over
DATA_UPLOAD_MAX_MEMORY_SIZE Django's HTML 400 page. Now: 400 JSON naming the body for anything
that is not acceptable JSON (too deep, NaN/Infinity, malformed, not UTF-8), 413 JSON for an
oversize body, and no run queued for any of them.
"""

import asyncio
import json

import pytest
from django.test import Client

from workflows_app import services
from workflows_app.models import WorkflowRun

HOOK_WORKFLOW = {
    "id": "hook", "name": "Hook", "description": "webhook target",
    "workflows": [{"name": "main", "steps": [{"id": "ask", "action": "llm", "params": {"prompt": "{{input.x}}"}}]}],
    "tools": [{"name": "llm", "type": "llm_call"}],
    "triggers": [{"type": "webhook"}],
}


@pytest.fixture
def hook(acme):
    workflow = services.workflow_create(tenant=acme.tenant, actor=acme.actor, document=HOOK_WORKFLOW)
    return workflow.to_document()["webhookUrl"]


def runs(acme):
    return WorkflowRun.objects.for_tenant(acme.tenant).count()


def post(url, body, **extra):
    # raise_request_exception=False: answer as the server would (Django's handlers), not re-raise.
    return Client(raise_request_exception=False).generic("POST", url, body, content_type="application/json", **extra)


def assert_json_refusal(response, status):
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"] == "application/json", response["Content-Type"]
    body = response.json()
    assert body["detail"] and body["errors"]["body"], body
    return body


@pytest.mark.parametrize("raw,why", [
    ("[" * 100_000, "nested more than 64 levels"),
    ("[" * 100_000 + "]" * 100_000, "nested more than 64 levels"),
    ('{"x": ' * 65 + "1" + "}" * 65, "nested more than 64 levels"),
    ('{"x": NaN}', "NaN is not JSON"),
    ('{"x": Infinity}', "Infinity is not JSON"),
    ('{"x": 1e999}', "out of range"),
    ('{"x": ', "not well-formed JSON"),
    (b'{"x": "\xff"}', "not UTF-8"),
])
def test_webhook_refuses_what_is_not_acceptable_json_with_400_json(acme, hook, raw, why):
    response = post(hook, raw)
    body = assert_json_refusal(response, 400)
    assert why in body["detail"] and why in body["errors"]["body"][0], body
    assert runs(acme) == 0


def test_oversize_webhook_body_is_413_json(acme, hook, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    response = post(hook, json.dumps({"x": "y" * 20_000}))
    body = assert_json_refusal(response, 413)
    assert "larger than 10000 bytes" in body["detail"]
    assert runs(acme) == 0


def asgi_post(path, chunks):
    """POST through Django's ASGI handler (as daphne serves it) with a chunked body: no Content-Length."""
    from asgiref.sync import async_to_sync
    from django.core import signals
    from django.core.handlers.asgi import ASGIHandler
    from django.db import close_old_connections

    messages = [{"type": "http.request", "body": chunk, "more_body": True} for chunk in chunks]
    messages.append({"type": "http.request", "body": b"", "more_body": False})
    sent = []

    async def receive():
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()  # the client stays connected (Django listens for a disconnect)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"localhost"), (b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
             "client": ("127.0.0.1", 5000), "server": ("localhost", 80)}
    # As Django's test clients do: keep the test's database connection open across the request.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        async_to_sync(ASGIHandler())(scope, receive, send)
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict((k.decode().lower(), v.decode()) for k, v in start["headers"]), body


def test_oversize_webhook_body_without_content_length_is_413_json(acme, hook, settings):
    """A chunked body carries no Content-Length for Django to check before reading it."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    status, headers, body = asgi_post(hook, [b'{"x": "', b"y" * 8_000, b"y" * 8_000, b'"}'])
    assert status == 413 and headers["content-type"] == "application/json", (status, body[:300])
    assert json.loads(body)["errors"]["body"]
    assert runs(acme) == 0
    status, _, body = asgi_post(hook, [b'{"x": ', b"[" * 5_000])
    assert status == 400 and "nested more than 64 levels" in json.loads(body)["detail"]
    assert asgi_post(hook, [b'{"x": ', b'"ok"}'])[0] == 202


def test_acceptable_bodies_still_queue_a_run(acme, hook):
    assert post(hook, json.dumps({"x": 1})).status_code == 202
    assert post(hook, "").status_code == 202
    nested = json.dumps({"x": json.loads("[" * 62 + "]" * 62)})  # 63 levels
    assert post(hook, nested).status_code == 202
    assert post(hook, "[1, 2]").status_code == 202  # wrapped as {"body": [1, 2]}
    inputs = [run.input for run in WorkflowRun.objects.for_tenant(acme.tenant).order_by("created_at")]
    assert inputs[0] == {"x": 1} and inputs[1] == {} and inputs[3] == {"body": [1, 2]}


def test_a_wrong_token_is_still_404_before_the_body_is_read(acme, hook):
    assert post(hook.rsplit("/", 1)[0] + "/wrong", "[" * 100_000).status_code == 404
