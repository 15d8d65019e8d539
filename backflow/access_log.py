"""The access log without credentials, under daphne and under uvicorn.

The contract's SSE door takes the API key in the query string (`GET /mcp/sse?token=KEY`), and
daphne writes each request's path, query included, to its access log. daphne builds its logger
from `daphne.cli.AccessLogGenerator` after loading the application, so loading backflow.asgi swaps
in this subclass, which logs `?token=[redacted]`; the rest of the line is daphne's own format
(or, with LOG_FORMAT=json, a JSON object). uvicorn (backflow.serve_uvicorn) logs each request on the
`uvicorn.access` logger: a filter there redacts the path of the record before any handler sees it.
"""

import json
import logging
import re
from datetime import datetime, timezone
from urllib.parse import unquote_plus

from daphne import cli
from daphne.access import AccessLogGenerator
from django.conf import settings

CREDENTIAL_NAMES = {"token", "access_token", "api_key", "key"}
QUERY_PARAMETER = re.compile(r"([?&])([^=&\s\"]*)=([^&\s\"]*)")


def redacted(request):
    """`request` ("GET /path?query") with the values of credential parameters as [redacted]; a
    name is compared as the server reads it (percent-decoded, any case: `%74oken` is `token`)."""

    def redact(match):
        separator, name, value = match.groups()
        if unquote_plus(name).lower() in CREDENTIAL_NAMES:
            value = "[redacted]"
        return f"{separator}{name}={value}"

    return QUERY_PARAMETER.sub(redact, request)


class RedactingAccessLog(AccessLogGenerator):
    def write_entry(self, host, date, request, status=None, length=None, ident=None, user=None):
        request = redacted(request)
        if settings.LOG_FORMAT != "json":
            return super().write_entry(host, date, request, status, length, ident, user)
        # LOG_FORMAT=json: the access log too is one JSON object per line, in the fields of the
        # other lines (daphne writes it after the answer, outside the request: no request id).
        self.stream.write(json.dumps({
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "level": "INFO", "logger": "daphne.access",
            "message": f'{host} "{request}" {status or "-"} {length or "-"}', "request_id": "-",
            "client": host, "request": request, "status": status, "length": length,
        }, ensure_ascii=False) + "\n")


class RedactingUvicornAccessLog(logging.Filter):
    """uvicorn's access records: (client, method, path with query, HTTP version, status)."""

    def filter(self, record):
        if isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, version, status = record.args
            record.args = (client, method, redacted(str(path)), version, status)
        return True


def install():
    cli.AccessLogGenerator = RedactingAccessLog
    uvicorn_access = logging.getLogger("uvicorn.access")
    if not any(isinstance(existing, RedactingUvicornAccessLog) for existing in uvicorn_access.filters):
        uvicorn_access.addFilter(RedactingUvicornAccessLog())
