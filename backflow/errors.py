"""Errors raised by the service layer, and their one mapping to HTTP answers.

Services raise these; REST (backflow.api_errors), MCP tools and admin forms turn them into a
4xx answer, an `isError` tool result or form errors. Every error names what to fix.
"""

from http import HTTPStatus


class ServiceError(Exception):
    status_code = HTTPStatus.BAD_REQUEST

    def __init__(self, message, errors=None):
        super().__init__(message)
        self.message = message
        # {"field.path": ["what is wrong", ...]}
        self.errors = errors or {}

    def as_dict(self):
        body = {"detail": self.message}
        if self.errors:
            body["errors"] = self.errors
        return body

    def __str__(self):
        if not self.errors:
            return self.message
        details = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in self.errors.items())
        return f"{self.message} {details}"


class InvalidInput(ServiceError):
    @classmethod
    def single(cls, field, message):
        return cls("Invalid input.", {field: [message]})


class NotFound(ServiceError):
    status_code = HTTPStatus.NOT_FOUND


class Conflict(ServiceError):
    status_code = HTTPStatus.CONFLICT


class Forbidden(ServiceError):
    status_code = HTTPStatus.FORBIDDEN


class TooManyRequests(ServiceError):
    """A per-tenant bound was reached; `retry_after` says in how many seconds to try again."""

    status_code = HTTPStatus.TOO_MANY_REQUESTS

    def __init__(self, message, retry_after=1):
        super().__init__(message)
        self.retry_after = retry_after

    def as_dict(self):
        return {**super().as_dict(), "retryAfterSeconds": self.retry_after}


class LoopDetected(ServiceError):
    """A chain of platform calls (webhook -> run -> upstream -> webhook…) went past its depth."""

    status_code = HTTPStatus.LOOP_DETECTED
