"""JSON request bodies, parsed once, the same way at every door, with a bound on their nesting.

`json.loads` recurses in C once per level: a body of 100 000 `[` is a RecursionError (not a
ValueError, so a 500 wherever only ValueError was expected), and a body nested just below the
interpreter's limit parses, then sends every recursive walker after it (JSON Schema validation,
NUL checks, templates, the audit log) into the same error. It also accepts NaN, Infinity and
numbers like 1e999 (read as infinity), which are not JSON: PostgreSQL refuses to store them.

`parse_json(raw)` is the one parse for request bodies: DRF's default parser
(`backflow.parsers.JSONParser` → this), the workflow webhook, and the raw ASGI apps (tenant
routes). It returns the value or raises a `JsonBodyError` (a ValueError) whose message says why,
in words a client can act on:

    from backflow.jsonbody import JsonBodyError, JsonTooDeep, parse_json

    try:
        payload = parse_json(body_bytes)
    except JsonBodyError as exc:
        return 400 {"detail": f"The body is not acceptable JSON: {exc}", "errors": {"body": [str(exc)]}}

The size of the body is the caller's to bound (DATA_UPLOAD_MAX_MEMORY_SIZE, 413) before it
reads it all.

Peers' answers (upstreams, OAuth token endpoints, the LLM, tenants' MCP servers) go through the
same parse: `parse_peer_json(raw)` is `parse_json` with messages worded for an answer the platform
received rather than a body a client sent, and `check_value(value)` applies the same rules (finite
numbers, bounded nesting) to a value another parser already built (the MCP SDK's).
"""

import json
import math
import re

from django.conf import settings

DEFAULT_MAX_DEPTH = 64


class JsonBodyError(ValueError):
    """The body is not JSON this service accepts; str() says why (for the client)."""


class JsonTooDeep(JsonBodyError):
    """Arrays and objects nested deeper than the limit."""


class JsonNotJson(JsonBodyError):
    """Not UTF-8, not well-formed JSON, or NaN / Infinity / a number out of range."""


def max_depth():
    return getattr(settings, "BACKFLOW_JSON_MAX_DEPTH", DEFAULT_MAX_DEPTH)


# What the messages say: to a client about its body, or about an answer a peer sent.
_WORDS = {
    False: {"constant": "{name} is not JSON; send numbers as finite values (or a string).",
            "deep": "arrays and objects are nested more than {limit} levels deep; flatten the body.",
            "utf8": "not UTF-8 (byte {start}); send JSON encoded as UTF-8."},
    True: {"constant": "{name} is not JSON (numbers must be finite).",
           "deep": "arrays and objects are nested more than {limit} levels deep (BACKFLOW_JSON_MAX_DEPTH).",
           "utf8": "not UTF-8 (byte {start})."},
}


def _constant(name, peer=False):
    raise JsonNotJson(_WORDS[peer]["constant"].format(name=name))


def _peer_constant(name):
    _constant(name, peer=True)


def _float(text):
    value = float(text)
    if not math.isfinite(value):
        raise JsonNotJson(f"the number {text[:40]} is out of range (it would be infinite).")
    return value


def _too_deep(limit, peer=False):
    return JsonTooDeep(_WORDS[peer]["deep"].format(limit=limit))


def depth_exceeds(value, limit):
    """True if arrays/objects in `value` nest more than `limit` levels (a scalar is 0, `[]` is 1).
    Iterative, and stops at the first level past the limit: safe on any value."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def parse_json(raw, *, limit=None, peer=False):
    """The JSON value of `raw` (bytes as UTF-8, or str), nested at most `limit` levels
    (default: settings.BACKFLOW_JSON_MAX_DEPTH). Raises JsonTooDeep or JsonNotJson (both
    JsonBodyError, a ValueError) naming why; never RecursionError. `peer=True` words the messages
    for an answer a peer sent (see parse_peer_json)."""
    limit = max_depth() if limit is None else limit
    if isinstance(raw, (bytes, bytearray, memoryview)):
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonNotJson(_WORDS[peer]["utf8"].format(start=exc.start)) from None
    elif isinstance(raw, str):
        text = raw
    else:
        raise TypeError(f"parse_json takes bytes or str, not {type(raw).__name__}")
    if text.startswith("\ufeff"):  # a byte order mark before UTF-8: tolerated (json.loads of bytes does too)
        text = text[1:]
    try:
        value = json.loads(text, parse_constant=_peer_constant if peer else _constant, parse_float=_float)
    except RecursionError:
        raise _too_deep(limit, peer) from None
    except JsonBodyError:
        raise
    except ValueError as exc:  # JSONDecodeError, and ints past Python's 4300-digit limit
        raise JsonNotJson(f"not well-formed JSON: {exc}.") from None
    # No value nests deeper than the text has brackets (strings only add some): most bodies need no walk.
    if text.count("[") + text.count("{") > limit and depth_exceeds(value, limit):
        raise _too_deep(limit, peer)
    if SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        raise JsonNotJson("a string holds an unpaired surrogate escape (such as \\ud800), which is not Unicode text: "
                          "send each character of the text as itself or as a valid \\u escape pair.")
    return value


# Only an escape can make a lone surrogate (UTF-8 cannot carry one): look for one before walking.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(value):
    """Whether a key or string of `value` holds a surrogate code point outside a valid pair: it
    cannot be stored as text (PostgreSQL refuses it, SQLite keeps it and every read then fails)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def parse_peer_json(raw, *, limit=None):
    """parse_json for what a peer answered: the same rules, messages that do not ask the reader to
    send anything (`NaN is not JSON (numbers must be finite).`)."""
    return parse_json(raw, limit=limit, peer=True)


def check_value(value, *, limit=None, peer=True):
    """Raise what parse_json would for `value`, a value another parser built: JsonNotJson for a
    float that is not finite (NaN, Infinity: what `1e999` becomes), JsonTooDeep for nesting past
    `limit`. Iterative, so safe on any value; tuples count as arrays."""
    limit = max_depth() if limit is None else limit
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                name = "NaN" if math.isnan(item) else ("Infinity" if item > 0 else "-Infinity")
                raise JsonNotJson(_WORDS[peer]["constant"].format(name=name))
        elif isinstance(item, (dict, list, tuple)):
            if depth + 1 > limit:
                raise _too_deep(limit, peer)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
