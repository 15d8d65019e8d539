"""The uvicorn option (`make run SERVER=uvicorn`, backflow.serve_uvicorn): daphne's own live tests
run again with every server of this module on uvicorn, plus what only uvicorn could get wrong.

The tests imported below are collected here too and take this module's `live_daphne`, which starts
uvicorn: the same doors, the same answers, the same access log without credentials."""

import socket
import time

import pytest

from conftest import live_servers
from integrations_app.tests.test_runtime_helpers import make_integration, make_route, upstream, upstreams  # noqa: F401
from integrations_app.tests.test_dispatch_live import (  # noqa: F401  (collected again, on uvicorn)
    test_route_change_through_one_process_is_served_by_another,
)
from mcp_app.tests.test_remote_sdk import test_sdk_clients_list_and_call_tools_per_key_and_tenant  # noqa: F401
from mcp_app.tests.test_remote_sse import (  # noqa: F401
    test_a_client_given_only_the_sse_url_works_and_each_message_is_still_authenticated,
    test_sse_credentials_header_jwt_and_revocation,
    test_sse_flow_answers_on_the_stream_and_refuses_bad_requests,
)
from tests.faults.helpers import wait_until
from tests.live import Uvicorn
from tests.security.test_fairness import Tarpit
from tests.security.test_edge_hardening import test_mcp_over_daphne_refuses_a_null_origin  # noqa: F401
from tests.security.test_revocation import (  # noqa: F401
    test_keys_in_the_query_string_stay_out_of_the_access_log,
    test_the_next_request_after_revocation_is_refused_everywhere,
)
from tests.test_operations import (  # noqa: F401
    test_behind_trusted_proxies_their_well_formed_id_is_kept,
    test_each_request_has_an_id_answered_stored_sent_upstream_and_logged,
    test_metrics_count_by_door_tool_and_outcome_without_tenant_data,
    probe,
    static_root,
    test_probes_answer_a_balancer_whatever_its_host_and_reveal_nothing,
)


@pytest.fixture
def live_daphne(transactional_db):
    """This module's servers are uvicorn (the name is the one the imported tests ask for)."""
    with live_servers(Uvicorn) as start:
        yield start


def read_until_closed(conn, limit=65536):
    answer = b""
    while len(answer) < limit and (chunk := conn.recv(4096)):
        answer += chunk
    return answer


def head_of(size):
    return b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * size + b"\r\n\r\n"


def answer_to(port, request):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        try:
            conn.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before it was all sent: the answer is still there to read
        return conn.recv(200)


def test_a_request_head_is_bounded(live_daphne):
    """httptools reads a head of any size (the process grew with it); h11 refuses one still
    incomplete past 16 KiB, so one larger than a read of the socket delivers."""
    server = live_daphne()
    assert answer_to(server.port, head_of(8 * 1024)).startswith(b"HTTP/1.1 200")
    assert answer_to(server.port, head_of(10 * 1024 * 1024)).startswith(b"HTTP/1.1 400")
    assert probe(server, "/healthz").status_code == 200


def test_a_forwarded_for_header_does_not_change_the_caller(live_daphne):
    """uvicorn's proxy headers are off: which address a request comes from is decided by
    BACKFLOW_TRUSTED_PROXIES alone (the address limits count by), not by an X-Forwarded-For that
    any caller can send (uvicorn believes it from 127.0.0.1 by default). The access log shows the
    address uvicorn gave the application."""
    server = live_daphne()
    answer = answer_to(server.port, b"GET /healthz?forged=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                    b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200"), answer
    line = wait_until(lambda: next((line for line in server.output(tail=None).splitlines() if "/healthz?forged=1" in line), None),
                      message="the request's access line")
    assert "127.0.0.1:" in line and "203.0.113.7" not in line, line


def test_upgrade_requests_are_answered_as_plain_http(live_daphne):
    """No door speaks WebSocket: uvicorn is started without it, so a handshake is never accepted."""
    server = live_daphne()
    answer = answer_to(server.port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    assert not answer.startswith(b"HTTP/1.1 101"), answer
    assert "Traceback" not in server.output(tail=None)


def test_the_server_stops_within_its_grace_while_a_route_hangs(acme, live_daphne):
    """SIGTERM while a route call waits on an upstream that never answers (its endpoint allows it
    60 s): the process ends after its 10 s of grace, not when the upstream gives up."""
    import threading

    import httpx

    tarpit = Tarpit()
    try:
        make_integration(acme, "tar", tarpit.url, [{"name": "hang", "method": "get", "path": "/hang", "timeout": 60}])
        make_route(acme, "/hang", [{"integration": "tar", "action": "hang"}], requireAuth=False)
        server = live_daphne(BACKFLOW_EGRESS_ALLOW="127.0.0.1")
        answers = []

        def call():
            try:
                answers.append(httpx.get(f"{server.url}/t/acme/hang", timeout=90).status_code)
            except httpx.HTTPError as exc:  # the server went away under it
                answers.append(exc.__class__.__name__)

        hanging = threading.Thread(target=call, daemon=True)
        hanging.start()
        time.sleep(2)  # the call is in flight, waiting on the tarpit
        assert hanging.is_alive()
        started = time.monotonic()
        server.process.terminate()
        server.process.wait(timeout=40)  # ends with TimeoutExpired if the grace does not bound it
        assert time.monotonic() - started < 30
        hanging.join(timeout=10)
        assert answers and answers[0] != 200, answers
    finally:
        tarpit.close()


def test_a_connection_that_sends_no_request_is_closed(live_daphne):
    """uvicorn alone keeps a connection that never sends a request open for good; here it is closed
    after the keep-alive timeout (5 s), as one that stops halfway through its head is."""
    server = live_daphne()
    for sent in (b"", b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
            conn.sendall(sent)
            started = time.monotonic()
            assert conn.recv(200) == b""  # closed by the server (a timeout here raises instead)
            assert time.monotonic() - started < 25
    assert answer_to(server.port, head_of(10)).startswith(b"HTTP/1.1 200")  # a whole request still gets its answer


def test_a_request_refused_midway_ends_quietly(live_daphne):
    """A malformed chunk after the head: uvicorn answers 400 and closes; the application's own
    answer (405 here, before it read the body) is dropped instead of raising into the log."""
    server = live_daphne()
    answer = answer_to(server.port, b"POST /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n")
    assert answer.startswith(b"HTTP/1.1 400"), answer
    time.sleep(1)  # the application's side has finished by then
    assert probe(server, "/healthz").status_code == 200
    log = server.output(tail=None)
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]
    assert '"POST /healthz HTTP/1.1" 405' not in log, log[-3000:]


@pytest.mark.parametrize("path", ["/api/integrations/", "/admin/login/", "/hooks/acme/w/token"])
def test_a_body_over_the_limit_is_refused_before_it_is_read(live_daphne, path):
    """Django's handler reads a whole body (to a temporary file past 2.5 MB) before any view runs:
    50 MB declared to a Django door, with no key, is refused at once instead, and a chunked body is
    refused once what was read passes the limit (1 MiB and a form's framing)."""
    server = live_daphne()
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n".encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(head + b"Content-Length: 52428800\r\n\r\n" + b"a" * 65536)
        answer = read_until_closed(conn)
    assert answer.startswith(b"HTTP/1.1 413") and b"larger than 1048576 bytes" in answer, answer
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (65536, b"a" * 65536)
        try:
            for _ in range(64):  # 4 MiB at most
                conn.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before it was all sent
        answer = conn.recv(300)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert probe(server, "/healthz").status_code == 200
