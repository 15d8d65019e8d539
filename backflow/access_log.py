"""daphne's access log without credentials.

The contract's SSE door takes the API key in the query string (`GET /mcp/sse?token=KEY`), and
daphne writes each request's path, query included, to its access log. daphne builds its logger
from `daphne.cli.AccessLogGenerator` after loading the application, so loading backflow.asgi swaps
in this subclass, which logs `?token=[redacted]`; the rest of the line is daphne's own format.
"""

import re

from daphne import cli
from daphne.access import AccessLogGenerator

CREDENTIAL_IN_QUERY = re.compile(r"([?&](?:token|access_token|api_key|key)=)[^&\s\"]*", re.IGNORECASE)


class RedactingAccessLog(AccessLogGenerator):
    def write_entry(self, host, date, request, *args, **kwargs):
        super().write_entry(host, date, CREDENTIAL_IN_QUERY.sub(r"\1[redacted]", request), *args, **kwargs)


def install():
    cli.AccessLogGenerator = RedactingAccessLog
