"""REST error answers: one JSON shape, `{"detail", "errors": {field path: [messages]}}`."""

from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from django.views import defaults
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from backflow.errors import ServiceError


def _flatten(detail, prefix=""):
    """DRF's nested error detail -> {"a.b[0].c": ["msg"]}."""
    if isinstance(detail, dict):
        out = {}
        for key, value in detail.items():
            path = key if not prefix else (f"{prefix}.{key}" if key != "non_field_errors" else prefix)
            out.update(_flatten(value, path))
        return out
    if isinstance(detail, list) and detail and all(isinstance(d, (dict, list)) for d in detail):
        out = {}
        for index, value in enumerate(detail):
            out.update(_flatten(value, f"{prefix}[{index}]"))
        return out
    messages = [str(d) for d in detail] if isinstance(detail, list) else [str(detail)]
    return {prefix or "body": messages}


def api_exception_handler(exc, context):
    if isinstance(exc, ServiceError):
        return Response(exc.as_dict(), status=exc.status_code)
    if isinstance(exc, RequestDataTooBig):
        return Response(
            {"detail": "Request body is too large.", "errors": {"body": ["Send a smaller body."]}},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, drf_exceptions.ValidationError):
        return Response({"detail": "Invalid input.", "errors": _flatten(exc.detail)}, status=400)
    if isinstance(exc, drf_exceptions.ParseError):
        # Malformed JSON: the whole body is the bad field.
        return Response(
            {"detail": str(exc.detail), "errors": {"body": ["Send a well-formed JSON object (UTF-8)."]}},
            status=status.HTTP_400_BAD_REQUEST,
        )
    return drf_exception_handler(exc, context)


def _is_api(request):
    return request.path.startswith(("/api/", "/agent/"))


def not_found(request, exception=None):
    """Django's 404 handler: JSON in the API's shape for API clients, the usual page for people."""
    if _is_api(request):
        return JsonResponse({"detail": f"No endpoint at {request.path}; the API's endpoints are listed at /api/docs/."}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    """Django's 500 handler: API clients get JSON they can parse (the traceback stays in the log)."""
    if _is_api(request):
        return JsonResponse({"detail": "Internal error; it has been logged. Retry later or contact the operator."}, status=500)
    return defaults.server_error(request)
