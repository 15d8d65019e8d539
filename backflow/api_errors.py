"""REST error answers: one JSON shape, `{"detail", "errors": {field path: [messages]}}`."""

import logging
import sys

from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse, JsonResponse
from django.utils.deprecation import MiddlewareMixin
from django.views import defaults
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from backflow import metrics
from backflow.asgi_utils import NUL_IN_PATH
from backflow.errors import ServiceError
from backflow.outages import RETRY_AFTER_SECONDS, describe, outage_message

logger = logging.getLogger("backflow.errors")


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
        retry = getattr(exc, "retry_after", None)
        return Response(exc.as_dict(), status=exc.status_code, headers={"Retry-After": str(retry)} if retry else None)
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
    outage = outage_message(exc)
    if outage:  # the database or Redis is down: retryable, not a bug
        metrics.outage(outage)
        return Response({"detail": outage}, status=status.HTTP_503_SERVICE_UNAVAILABLE,
                        headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    return drf_exception_handler(exc, context)


def _is_api(request):
    return request.path.startswith(("/api/", "/agent/"))


def refuse_nul_in_path(get_response):
    """Middleware: a NUL character in the path names nothing, and PostgreSQL refuses it in the
    lookup every view would make with it (a 500)."""

    def middleware(request):
        if "\x00" in request.path:
            if _is_api(request):
                return JsonResponse({"detail": NUL_IN_PATH, "errors": {"path": [NUL_IN_PATH]}}, status=400)
            return HttpResponse(NUL_IN_PATH, status=400, content_type="text/plain; charset=utf-8")
        return get_response(request)

    return middleware


def not_found(request, exception=None):
    """Django's 404 handler: JSON in the API's shape for API clients, the usual page for people."""
    if _is_api(request):
        return JsonResponse({"detail": f"No endpoint at {request.path}; the API's endpoints are listed at /api/docs/."}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    """Django's 500 handler: API clients get JSON they can parse (the traceback stays in the log).
    An outage of the database or Redis outside a DRF view (middleware, sign-in and app pages) is a
    503 naming it, with Retry-After, for people and API clients alike."""
    outage = outage_message(sys.exc_info()[1])  # Django calls this inside its `except` block
    if outage:
        return _outage_response(request, outage)
    if _is_api(request):
        return JsonResponse({"detail": "Internal error; it has been logged. Retry later or contact the operator."}, status=500)
    return defaults.server_error(request)


def _outage_response(request, outage):
    metrics.outage(outage)
    response = JsonResponse({"detail": outage}, status=503) if _is_api(request) else HttpResponse(
        outage, status=503, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class OutageMiddleware(MiddlewareMixin):
    """A view (outside DRF, e.g. a workflow webhook or the sign-in page) that fails because the
    database or Redis is down answers 503 naming it, logged as one line: an outage is not a bug,
    and Django would log it as an error with a traceback on the way to `server_error`."""

    def process_exception(self, request, exception):
        outage = outage_message(exception)
        if outage:
            logger.warning("%s %s: %s (%s)", request.method, request.path, outage, describe(exception))
            return _outage_response(request, outage)
        return None
