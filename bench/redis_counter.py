"""A counting TCP proxy between ours and Redis: how many round trips ours makes (bench/load_mcp.py).

    .venv/bin/python -m bench.redis_counter --upstream 127.0.0.1:6379 --port PORT --control PORT

Ours is given redis://127.0.0.1:PORT/<db> as its REDIS_URL; every byte goes on to the upstream
Redis and back unchanged, on one upstream connection per client connection (so pools, blocking
commands and scripts behave as without the proxy). A connection to the control port gets the
counts so far as one JSON document and is closed (`snapshot()`); a benchmark takes the difference
of two snapshots around what it measures.

A round trip, per client connection: everything the client sends from its first byte after the
server's last answer (or after connecting) until the server's next answer. So one command is one
round trip, a pipeline or MULTI..EXEC sent before reading the answers is one, and a script
(EVAL/EVALSHA/FCALL) is one whatever it calls inside (Redis's own INFO commandstats counts the
commands a script calls as well, and counts every pipelined command: commands, not round trips;
it is also server-wide, so other clients of a shared Redis would be counted). A round trip is
counted when it starts (`roundTrips`); the commands it carried (client bytes parsed as RESP)
are recorded as its "shape" when its answer arrives (`shapes`: e.g. "ZADD asgi:specific.*" or
"SET x + INCR x + GET x" for a pipeline; ids in keys shown as *), for the breakdown. `check()`
verifies the count against known cases through the proxy.
"""

import argparse
import asyncio
import json
import re
import socket
from collections import Counter

_ID = re.compile(rb"[0-9a-f]{8,}|[A-Za-z0-9]{12,}|[0-9]+")


class Counts:
    def __init__(self):
        self.round_trips = 0
        self.commands = 0
        self.connections = 0
        self.shapes = Counter()

    def snapshot(self):
        return {"roundTrips": self.round_trips, "commands": self.commands, "connections": self.connections,
                "shapes": dict(self.shapes)}


COUNTS = Counts()


def _label(args):
    """"NAME key-family" of one command (its first key, ids replaced by *)."""
    if not args:
        return "?"
    name = args[0].decode("latin-1").upper()
    key = None
    if name in ("EVAL", "EVALSHA", "FCALL", "EVAL_RO", "EVALSHA_RO", "FCALL_RO"):
        if len(args) > 3 and args[2] not in (b"0",):
            key = args[3]
    elif name not in ("PING", "HELLO", "CLIENT", "SELECT", "AUTH", "MULTI", "EXEC", "SCRIPT", "INFO") and len(args) > 1:
        key = args[1]
    return name if key is None else f"{name} {_ID.sub(b'*', key[:120]).decode('latin-1')}"


class Commands:
    """The commands in a client's byte stream: RESP arrays of bulk strings (what redis-py sends),
    or inline commands (a line of words)."""

    def __init__(self):
        self.buffer = bytearray()

    def feed(self, data):
        self.buffer += data
        labels = []
        while self.buffer:
            args = self._one()
            if args is None:
                break
            labels.append(_label(args))
        return labels

    def _one(self):
        buf = self.buffer
        end = buf.find(b"\r\n")
        if end < 0:
            return None
        if buf[:1] != b"*":  # inline
            args = bytes(buf[:end]).split()
            del buf[:end + 2]
            return args
        count, position, args = int(buf[1:end]), end + 2, []
        for _ in range(count):
            end = buf.find(b"\r\n", position)
            if end < 0:
                return None
            length = int(buf[position + 1:end])
            start = end + 2
            if len(buf) < start + length + 2:
                return None
            if len(args) < 4:  # the name and the first arguments are enough for a label
                args.append(bytes(buf[start:start + length]))
            position = start + length + 2
        del buf[:position]
        return args


class ServerSide(asyncio.Protocol):
    def __init__(self, client):
        self.client = client

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.client.answered(data)

    def connection_lost(self, exc):
        self.client.transport.close()


class ClientSide(asyncio.Protocol):
    upstream_address = ("127.0.0.1", 6379)

    def connection_made(self, transport):
        COUNTS.connections += 1
        self.transport = transport
        self.upstream = None
        self.pending = bytearray()  # what the client sent before the upstream connection was made
        self.parser = Commands()
        self.waiting = False  # a round trip is out and not answered yet
        self.shape = []
        self.connecting = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self):
        try:
            _, self.upstream = await asyncio.get_running_loop().create_connection(
                lambda: ServerSide(self), *self.upstream_address)
        except OSError:
            self.transport.close()
            return
        self.upstream.transport.set_write_buffer_limits(high=1 << 24)
        if self.pending:
            self.upstream.transport.write(bytes(self.pending))
            self.pending.clear()

    def data_received(self, data):
        if not self.waiting:
            self.waiting = True
            self.shape = []
            COUNTS.round_trips += 1
        labels = self.parser.feed(data)
        COUNTS.commands += len(labels)
        self.shape.extend(labels)
        if self.upstream is None:
            self.pending += data
        else:
            self.upstream.transport.write(data)

    def answered(self, data):
        if self.waiting:
            self.waiting = False
            COUNTS.shapes[" + ".join(self.shape) or "?"] += 1
        self.transport.write(data)

    def connection_lost(self, exc):
        if self.upstream is not None:
            self.upstream.transport.close()
        else:
            self.connecting.cancel()


async def _control(reader, writer):
    writer.write(json.dumps(COUNTS.snapshot()).encode())
    await writer.drain()
    writer.close()


async def serve(upstream, port, control, host="127.0.0.1"):
    ClientSide.upstream_address = upstream
    loop = asyncio.get_running_loop()
    control_server = await asyncio.start_server(_control, host, control)  # up before the proxy port says "ready"
    proxy = await loop.create_server(ClientSide, host, port)
    async with control_server, proxy:
        await proxy.serve_forever()


def snapshot(control, host="127.0.0.1"):
    """The counts so far of the proxy whose control port is `control`."""
    with socket.create_connection((host, control), timeout=10) as connection:
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return json.loads(b"".join(chunks))


def difference(after, before):
    """What was counted between two snapshots."""
    shapes = {shape: n - before["shapes"].get(shape, 0) for shape, n in after["shapes"].items()}
    return {"roundTrips": after["roundTrips"] - before["roundTrips"], "commands": after["commands"] - before["commands"],
            "connections": after["connections"] - before["connections"],
            "shapes": dict(sorted(((s, n) for s, n in shapes.items() if n), key=lambda item: -item[1]))}


def check(port, control, db, host="127.0.0.1"):
    """Known cases through the proxy: a pipeline of 3 commands (1 round trip), a script calling 2
    commands (1), MULTI SET INCR EXEC (1) and 3 commands one after the other (3) = 6 round trips
    and 11 commands. Returns {"expected", "counted", "commands", "ok", "shapes"}."""
    import redis

    client = redis.Redis(host=host, port=port, db=db, socket_timeout=5)
    key = "bench:redis-counter-check"
    try:
        client.ping()  # connects first (HELLO/CLIENT SETINFO/SELECT are the connection's own round trips)
        before = snapshot(control, host)
        pipe = client.pipeline(transaction=False)
        pipe.set(key, 1).incr(key).get(key)
        assert pipe.execute() == [True, 2, b"2"]
        assert client.eval("redis.call('INCR', KEYS[1]) return redis.call('GET', KEYS[1])", 1, key) == b"3"
        transaction = client.pipeline(transaction=True)
        transaction.set(key, 5).incr(key)
        assert transaction.execute() == [True, 6]
        assert client.get(key) == b"6"
        assert client.incr(key) == 7
        assert client.delete(key) == 1
        counted = difference(snapshot(control, host), before)
    finally:
        client.close()
    expected = {"roundTrips": 6, "commands": 3 + 1 + 4 + 3}
    return {"expected": expected, "counted": counted["roundTrips"], "commands": counted["commands"], "shapes": counted["shapes"],
            "ok": (counted["roundTrips"], counted["commands"]) == (expected["roundTrips"], expected["commands"])}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", default="127.0.0.1:6379", help="HOST:PORT of Redis")
    parser.add_argument("--port", type=int, required=True, help="the port ours connects to")
    parser.add_argument("--control", type=int, required=True, help="the port that answers the counts")
    args = parser.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    asyncio.run(serve((host, int(port)), args.port, args.control))


if __name__ == "__main__":
    main()
