"""Serve one MCP connection on this process's stdin/stdout."""

import logging
import os
from contextlib import contextmanager

import anyio
from django.conf import settings
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage

from mcp_app.server import CONNECTION, build_server, check_message

logger = logging.getLogger("backflow.mcp")


async def serve_stdio(ctx):
    CONNECTION.set(ctx)  # handlers run in this context: one stdio process is one connection
    server = build_server()
    with _claimed_stdin() as wire:
        lines = CheckedLines(wire, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        async with stdio_server(stdin=lines) as (read_stream, write_stream):
            lines.answer_on(write_stream)
            await server.run(read_stream, write_stream, server.create_initialization_options())


@contextmanager
def _claimed_stdin():
    """The wire as a binary file on a private copy of fd 0, while fd 0 itself reads /dev/null:
    what the SDK's stdio_server does when it reads stdin itself, so that nothing else in this
    process, nor a child it starts, can read protocol bytes."""
    wire_fd = os.dup(0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    try:
        with os.fdopen(wire_fd, "rb", closefd=False) as wire:
            yield wire
    finally:
        os.dup2(wire_fd, 0)
        os.close(wire_fd)


class CheckedLines:
    """stdin's lines for the SDK's stdio reader, each checked first (check_message).

    The SDK drops a line it cannot parse without a word, so a client whose request was garbled
    would wait forever; here every such line is answered with its JSON-RPC error (-32700 parse
    error, -32600 invalid request, -32602 invalid params) on the SDK's own write stream, and never
    reaches the SDK. Blank lines are skipped; a line over `limit` bytes is not even kept in memory.
    """

    def __init__(self, wire, limit):
        self._wire = wire
        self._limit = limit
        self._write_stream = None
        self._ready = anyio.Event()

    def answer_on(self, write_stream):
        self._write_stream = write_stream
        self._ready.set()

    def __aiter__(self):
        return self

    async def __anext__(self):
        while True:
            line = await self._readline(self._limit + 1)
            if not line:
                raise StopAsyncIteration
            if len(line) > self._limit and not line.endswith(b"\n"):
                while (rest := await self._readline(65536)) and not rest.endswith(b"\n"):
                    pass  # skip the rest of the oversized line
                rejection = check_message(line, self._limit)
            elif not line.strip():
                continue
            else:
                rejection = check_message(line)
                if rejection is None:
                    return line.decode()  # UTF-8: check_message parsed it
            await self._answer(rejection)

    async def _readline(self, size):
        return await anyio.to_thread.run_sync(self._wire.readline, size)

    async def _answer(self, rejection):
        logger.debug("stdio: refused a line: %s", rejection.message)
        if not rejection.reply:
            return
        await self._ready.wait()
        try:
            await self._write_stream.send(SessionMessage(rejection.error()))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass  # the server is shutting down
