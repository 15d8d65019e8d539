"""Bodies read from peers (upstreams, OAuth token endpoints, the LLM, tenants' MCP servers), with
a bound on every step: the one place the platform decodes and counts what a peer sends.

A peer decides what it sends, and `Content-Encoding` lets it send little that becomes a lot:
273 bytes of `gzip, gzip, gzip` are 200 MiB of zeros. httpx decodes each network chunk whole
before a caller can count it, so a cap checked on decoded chunks comes after the memory is gone.
Here the raw bytes are read (`aiter_raw()`) and decoded by zlib with `max_length`: no step ever
produces more than PIECE bytes, and the count stops the read as soon as it passes the limit.

- One encoding at most: `gzip` (or `x-gzip`), `deflate` (zlib-wrapped or raw), `identity`.
  Stacked encodings (`gzip, gzip`) and unknown ones (`br`, `zstd`, …) are refused, naming the
  header: no client of the platform advertises them (ACCEPT_ENCODING).
- A body is counted whole (`read_body`, `decoded_chunks`), or, for an event stream that lives for
  hours (an MCP server's SSE), per event (`per_event=True`: bytes since the last blank line).

    from backflow.peer_bodies import PeerBodyError, read_body

    async with client.stream("GET", url) as response:
        try:
            body = await read_body(response, limit=settings.BACKFLOW_UPSTREAM_MAX_BYTES,
                                   what="the upstream answer", setting="BACKFLOW_UPSTREAM_MAX_BYTES")
        except PeerBodyError as exc:
            ...  # 502 with str(exc): the size and the setting, or the refused encoding

Messages start with `what` and never quote the body (a peer's bytes can carry what the platform
sent it: credentials).
"""

import re
import zlib

PIECE = 64 * 1024  # the most one decoding step may produce
ACCEPT_ENCODING = "gzip, deflate"  # what the platform's clients advertise (and decode here)
_GZIP_MAGIC = b"\x1f\x8b"


class PeerBodyError(Exception):
    """A peer's body was refused before it was read whole; str() names why (size and setting, or
    the encoding)."""


class PeerBodyTooLarge(PeerBodyError):
    """More bytes (decoded) than the limit: the whole body, or one event of an event stream."""


class PeerEncodingRefused(PeerBodyError):
    """Stacked, unknown or corrupt Content-Encoding."""


def _shown(header):
    text = "".join(ch if ch.isprintable() else "?" for ch in header.strip())
    return text if len(text) <= 80 else text[:80] + "…"


def codings(content_encoding, *, what):
    """The one coding to undo ('gzip', 'deflate') or None, from a Content-Encoding header (several
    header lines arrive joined by commas); PeerEncodingRefused for stacked or unknown ones."""
    if not content_encoding:  # most answers: asked twice for each
        return None
    names = [part.strip().lower() for part in content_encoding.split(",")]
    names = [name for name in names if name and name != "identity"]
    if not names:
        return None
    if len(names) > 1:
        raise PeerEncodingRefused(f"{what} has stacked content encodings (Content-Encoding: {_shown(content_encoding)}); "
                                  "only one of gzip or deflate is accepted.")
    name = names[0]
    if name in ("gzip", "x-gzip"):
        return "gzip"
    if name == "deflate":
        return "deflate"
    raise PeerEncodingRefused(f"{what} has Content-Encoding {_shown(name)!r}, which is not accepted (gzip, deflate or none).")


class _Identity:
    coding = None

    def feed(self, data):
        if data:
            yield bytes(data)

    def flush(self):
        return ()


class _Inflate:
    """gzip (several members too) or deflate (zlib-wrapped, or raw as some servers send it),
    undone PIECE bytes at a time."""

    def __init__(self, coding, what):
        self.coding, self.what = coding, what
        self._raw_fallback = coding == "deflate"  # until the first bytes decode as zlib
        self._new(zlib.MAX_WBITS | 16 if coding == "gzip" else zlib.MAX_WBITS)
        self._done = self._between = False

    def _new(self, wbits):
        self._decoder = zlib.decompressobj(wbits)

    def _corrupt(self, exc):
        return PeerEncodingRefused(f"{self.what} is not valid {self.coding} data ({exc}).")

    def feed(self, data):
        return self._run(bytes(data), more=bool(data))

    def flush(self):
        return self._run(b"", more=True)  # output zlib still holds

    def _run(self, data, *, more):
        while more and not self._done:
            if self._between:  # a gzip member ended: another may follow, or trailing bytes
                if not data:
                    return
                if not data.startswith(_GZIP_MAGIC[:len(data)]):
                    self._done = True  # bytes after the end are ignored (as httpx does)
                    return
                self._between = False
            try:
                out = self._decoder.decompress(data, PIECE)
            except zlib.error as exc:
                if not (self._raw_fallback and data):
                    raise self._corrupt(exc) from None
                self._raw_fallback = False
                self._new(-zlib.MAX_WBITS)
                continue
            self._raw_fallback = False
            if out:
                yield out
            data = self._decoder.unconsumed_tail
            if self._decoder.eof:
                if self.coding != "gzip":
                    self._done = True  # bytes after the end are ignored (as httpx does)
                    return
                data = self._decoder.unused_data  # all the input past the member's end (unconsumed_tail repeats it)
                self._new(zlib.MAX_WBITS | 16)  # a multi-member gzip goes on with its next member
                self._between = more = True
                continue
            # Input left over, or a full PIECE out (zlib may hold more): go on, PIECE at a time.
            more = bool(data) or len(out) == PIECE


def decoder(content_encoding, *, what):
    coding = codings(content_encoding, what=what)
    return _Identity() if coding is None else _Inflate(coding, what)


class _Total:
    def __init__(self, limit, what, setting, coding):
        self.limit, self.what, self.setting, self.coding, self.used = limit, what, setting, coding, 0

    def take(self, piece):
        self.used += len(piece)
        if self.used > self.limit:
            raise PeerBodyTooLarge(f"{self.what} is larger than {self.limit} bytes{_decoded(self.coding)}{_named(self.setting)}")


# An empty line ends an SSE event: two line terminators in a row (CRLF, LF or CR each).
_TERMINATOR = rb"(?:\r\n|\n|\r(?!\n))"
_EVENT_END = re.compile(_TERMINATOR + _TERMINATOR)


class _PerEvent(_Total):
    """Counts the bytes of the event being received (since the last blank line); the stream as a
    whole may go on for ever."""

    def __init__(self, *args):
        super().__init__(*args)
        self._tail = b""  # the last bytes seen, so a blank line split across pieces is found

    def take(self, piece):
        window = self._tail + piece
        last = None
        for last in _EVENT_END.finditer(window):
            pass
        if last is not None:
            self.used = len(window) - last.end()
        else:
            self.used += len(piece)
        self._tail = window[-3:]
        if self.used > self.limit:
            raise PeerBodyTooLarge(f"{self.what} holds an event larger than {self.limit} bytes{_decoded(self.coding)}"
                                   f"{_named(self.setting)}")


def _decoded(coding):
    return f" once decompressed ({coding})" if coding else ""


def _named(setting):
    return f"; the limit is {setting}." if setting else "."


async def decoded_chunks(raw_chunks, *, content_encoding, limit, what, setting=None, per_event=False):
    """The decoded bytes of `raw_chunks` (an async iterable of the bytes as received), PIECE at
    most at a time; PeerBodyTooLarge as soon as more than `limit` bytes were decoded (in total, or
    in one SSE event with `per_event`), PeerEncodingRefused for an encoding that is not accepted.
    `setting` names what sets the limit, for the message (none for a fixed limit)."""
    undo = decoder(content_encoding, what=what)
    count = (_PerEvent if per_event else _Total)(limit, what, setting, undo.coding)
    async for raw in raw_chunks:
        for piece in undo.feed(raw):
            count.take(piece)
            yield piece
    for piece in undo.flush():
        count.take(piece)
        yield piece


async def read_body(response, *, limit, what, setting=None):
    """The whole decoded body of a streamed httpx (or httpx2) response, at most `limit` bytes
    (PeerBodyTooLarge beyond, before reading on; an identity body that announces more is refused
    unread)."""
    encoding = response.headers.get("content-encoding")
    announced = response.headers.get("content-length", "")
    if codings(encoding, what=what) is None and announced.isdigit() and int(announced) > limit:
        raise PeerBodyTooLarge(f"{what} is larger than {limit} bytes ({int(announced)} announced){_named(setting)}")
    body = bytearray()
    async for piece in decoded_chunks(response.aiter_raw(), content_encoding=encoding, limit=limit, what=what, setting=setting):
        body.extend(piece)
    return bytes(body)
