"""Real peers for the workflow tests; nothing here is a mock except the LLM.

- MCP servers: the pinned npm peers of tests/peers (server-everything over stdio or Streamable
  HTTP, server-filesystem over stdio), run with the Node 22 that comes with them.
- The LLM: a small OpenAI-compatible HTTP server on 127.0.0.1 that records every request.
- The worker: a real `manage.py run_worker` child on the test database (tests.live.child_env).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.live import ROOT, child_env, free_port, wait_for_port
from workflows_app import services
from workflows_app.mcp_client import CLIENT
from workflows_app.models import WorkflowRun

PEERS = ROOT / "tests" / "peers"
NODE = str(PEERS / "node_modules" / "node" / "bin" / "node")
EVERYTHING = str(PEERS / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js")
FILESYSTEM = str(PEERS / "node_modules" / "@modelcontextprotocol" / "server-filesystem" / "dist" / "index.js")
LOOPBACK_ONLY = str(PEERS / "loopback-only.mjs")


def close_connections():
    """Stop every kept MCP connection of this process (stdio children included)."""
    CLIENT.run(CLIENT.manager.close_all(), 30)


# -- documents ---------------------------------------------------------------------------------

def everything_stdio(name="everything", **extra):
    return {"name": name, "command": NODE, "args": [EVERYTHING], **extra}


def filesystem_stdio(folder, name="filesystem"):
    return {"name": name, "command": NODE, "args": [FILESYSTEM, str(folder)]}


def add_stdio_server(ctx, document):
    """What an operator does in the admin (or import_config): stdio servers are not for tenants."""
    return services.mcp_server_create(tenant=ctx.tenant, actor=ctx.actor, document=document, allow_stdio=True)


def workflow(id, steps, tools=(), triggers=None, name=None, **extra):
    doc = {"id": id, "name": name or id.replace("-", " ").title(), "workflows": [{"name": "main", "steps": list(steps)}],
           "tools": list(tools), **extra}
    if triggers is not None:
        doc["triggers"] = list(triggers)
    return doc


def step(id, action, params=None, **extra):
    return {"id": id, "action": action, "params": params or {}, **extra}


def echo_workflow(id="echo", server="everything", message="hello {{input.who}}", **extra):
    return workflow(id, [step("say", "mcp.execute", {"server": server, "tool": "echo", "arguments": {"message": message}})], **extra)


def run_now(ctx, wf, input=None):
    """Queue a run and execute it in this process (the engine a worker runs); returns the fresh run."""
    from workflows_app import engine

    run = services.run_create(tenant=ctx.tenant, actor=ctx.actor, workflow=wf, input=input or {})
    engine.execute(run.id)
    run.refresh_from_db()
    return run


def wait_status(run_id, statuses, timeout=20.0):
    """Poll the database until the run reaches one of `statuses`; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        run = WorkflowRun.all_tenants.select_related("workflow").get(pk=run_id)
        if run.status in statuses:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {run.status!r} after {timeout} s (wanted {statuses})")
        time.sleep(0.05)


# -- processes ---------------------------------------------------------------------------------

def child_pids(parent=None):
    """{pid: command line} of the live (not zombie) children of `parent` (default: this process)."""
    parent = str(parent or os.getpid())
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            state, ppid = stat.rsplit(")", 1)[1].split()[:2]
            if ppid == parent and state != "Z":
                found[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return found


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def wait_until(predicate, timeout=10.0, interval=0.05, message="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not reached within {timeout} s")
        time.sleep(interval)


class Process:
    """A child in its own process group, so stopping it also stops what it started (stdio servers)."""

    def __init__(self, args, env, label):
        self.label = label
        self.log = tempfile.NamedTemporaryFile(prefix=f"{label}-", suffix=".log", delete=False)
        self.process = subprocess.Popen(args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.process.pid

    def output(self):
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def descendants(self):
        """Every live process below this one (the MCP SDK starts stdio servers in their own session,
        so the process group does not reach them)."""
        found, todo = [], [self.pid]
        while todo:
            children = list(child_pids(todo.pop()))
            found += children
            todo += children
        return found

    def kill(self, sig=signal.SIGKILL):
        """Signal the whole group at once (SIGKILL: as if the machine lost the worker)."""
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self):
        below = self.descendants()
        if self.process.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.kill(signal.SIGKILL)  # anything of the group still alive
        if self.process.poll() is None:
            self.process.wait(timeout=10)
        for pid in below:  # orphans of other sessions
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


class Worker(Process):
    """`manage.py run_worker` on the test database (tests using it need transactional_db)."""

    def __init__(self, extra_args=(), **env):
        env = {"BACKFLOW_SCHEDULER_INTERVAL": "0.5", **env}
        super().__init__([sys.executable, "manage.py", "run_worker", "--no-startup-delay", "--interval", "0.1", "--no-reload",
                          *extra_args], child_env(**env), "run-worker")

    def stop(self):
        # Runs are durable and the test is over: no graceful shutdown to wait for.
        below = self.descendants()
        self.kill(signal.SIGKILL)
        for pid in below:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        super().stop()


class EverythingHttp(Process):
    """server-everything on a free loopback port: Streamable HTTP (POST/GET/DELETE /mcp) or, with
    mode="sse", the older SSE transport (GET /sse, POST /message)."""

    def __init__(self, mode="streamableHttp", port=None):
        self.port = port or free_port()
        super().__init__([NODE, "--import", LOOPBACK_ONLY, EVERYTHING, mode],
                         {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), "PORT": str(self.port)},
                         f"everything-{mode}")
        self.url = f"http://127.0.0.1:{self.port}/{'sse' if mode == 'sse' else 'mcp'}"
        wait_for_port(self.port, self.process)


class Listener:
    """A bare TCP socket on 127.0.0.1 that counts the connections made to it (none expected)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def connections(self):
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1

    def close(self):
        self.sock.close()


# -- the LLM -----------------------------------------------------------------------------------

class FakeLlm:
    """An OpenAI-compatible /chat/completions endpoint on 127.0.0.1 that records what it was sent.

    `reply(body)` decides the assistant's text (default: a fixed sentence naming the prompt size).
    """

    def __init__(self):
        self.requests = []  # [{"path", "headers", "body"}]
        self.reply = lambda body: f"Looks fine ({len(body['messages'][-1]['content'])} characters)."
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.loads(raw or b"{}")
                owner.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                text = owner.reply(body)
                self._send(200, {
                    "id": f"chatcmpl-{len(owner.requests)}", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                })

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def prompts(self):
        return [r["body"]["messages"][-1]["content"] for r in self.requests]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
