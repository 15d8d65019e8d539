"""DRF's default request parser: JSON through backflow.jsonbody (bounded depth, no NaN/Infinity).

DRF's own JSONParser lets a deeply nested body raise RecursionError (a 500) and reads the whole
stream whatever its size when the request has no Content-Length.
"""

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework import parsers
from rest_framework.exceptions import ParseError

from backflow.jsonbody import JsonBodyError, parse_json


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read(limit + 1) if limit is not None else stream.read()
        if limit is not None and len(raw) > limit:
            raise RequestDataTooBig(f"Request body is larger than {limit} bytes.")  # 413 (backflow.api_errors)
        try:
            text = raw.decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise ParseError(f"JSON parse error - the body is not {encoding} text.") from exc
        try:
            return parse_json(text)
        except JsonBodyError as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc
