"""The peer of bench/load_workflows.py: a plain django-tasks-db task doing what our one-step
workflow does (GET the local upstream), run by django-tasks-db's own `db_worker`, and the bare
ASGI endpoint that queues it (daphne serves `bench.peer_tasks:enqueue_app`, as it serves our
POST /api/workflows/<id>/runs/): no authentication, validation, run record or audit.

Loaded only by processes on the bench's Django settings (db_worker, that daphne, load_workflows):
the @task decorator needs them.
"""

import json

import django

django.setup()  # daphne imports this module before anything sets Django up; a no-op elsewhere

import httpx  # noqa: E402
from django_tasks import task  # noqa: E402

_client = None


@task()
def fetch_items(url):
    """GET `url` on a kept-open connection (as our runtime keeps its own); the JSON answer is the
    result (stored, as our step result is)."""
    global _client
    if _client is None:
        _client = httpx.Client(timeout=60, trust_env=False)
    response = _client.get(url)
    response.raise_for_status()
    return response.json()


async def enqueue_app(scope, receive, send):
    """POST {"url": …} -> 201 {"id": <task result id>}."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    result = await fetch_items.aenqueue(json.loads(body)["url"])
    answer = json.dumps({"id": str(result.id)}).encode()
    await send({"type": "http.response.start", "status": 201,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})
