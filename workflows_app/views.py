"""Webhook trigger: POST /hooks/<tenant>/<workflow id>/<token> queues a run with the JSON body as input."""

import secrets

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from backflow.errors import ServiceError
from backflow.jsonbody import JsonBodyError, parse_json
from integrations_app.runtime import DEPTH_HEADER, call_depth
from tenants.principals import Principal
from tenants.selectors import tenant_get
from workflows_app import services
from workflows_app.models import Workflow


@csrf_exempt
def webhook(request, tenant_slug, workflow_slug, token):
    if request.method != "POST":  # Django's require_POST answers an HTML page
        return JsonResponse({"detail": f"POST the webhook's JSON body here; {request.method} is not allowed."}, status=405,
                            headers={"Allow": "POST"})
    tenant = tenant_get(slug=tenant_slug)
    workflow = Workflow.objects.for_tenant(tenant).filter(slug=workflow_slug).first() if tenant and tenant.is_active else None
    valid = workflow is not None and any(t["type"] == "webhook" for t in workflow.definition.get("triggers", []))
    if not valid or not secrets.compare_digest(token.encode(), workflow.webhook_token.encode()):
        return JsonResponse({"detail": "No such webhook."}, status=404)
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    try:
        raw = request.body  # RequestDataTooBig when Content-Length is over the limit
    except RequestDataTooBig:
        raw = None
    if raw is None or (limit is not None and len(raw) > limit):  # also a chunked body sent without Content-Length
        return JsonResponse({"detail": f"Request body is larger than {limit} bytes.", "errors": {"body": ["Send a smaller body."]}},
                            status=413)
    try:
        payload = parse_json(raw) if raw.strip() else {}
    except JsonBodyError as exc:  # malformed, not UTF-8, NaN/Infinity, or nested too deep
        return JsonResponse({"detail": f"The body is not acceptable JSON: {exc}", "errors": {"body": [str(exc)]}}, status=400)
    if not isinstance(payload, dict):
        payload = {"body": payload}
    try:
        depth = call_depth(request.headers.get(DEPTH_HEADER))
        run = services.run_create(tenant=tenant, actor=Principal.system(tenant, "webhook"), workflow=workflow, input=payload,
                                  trigger="webhook", depth=depth)
    except ServiceError as exc:  # a NUL character in the payload, the runs-per-minute bound, a loop…
        retry = getattr(exc, "retry_after", None)
        return JsonResponse(exc.as_dict(), status=exc.status_code, headers={"Retry-After": str(retry)} if retry else None)
    return JsonResponse({"runId": str(run.id), "status": run.status}, status=202)
