"""Fixtures for the workflow tests: real MCP peers, a real worker, and a fake (local) LLM."""

import pytest

from workflows_app.tests.helpers import EverythingHttp, FakeLlm, Listener, Worker, close_connections


@pytest.fixture(autouse=True)
def _fresh_mcp_connections():
    """The MCP client keeps connections open on a process-wide loop: each test starts with none
    and leaves none (their stdio children are stopped with them)."""
    close_connections()
    yield
    close_connections()


@pytest.fixture
def fake_llm(settings):
    llm = FakeLlm()
    settings.BACKFLOW_LLM_BASE_URL = llm.base_url
    settings.BACKFLOW_LLM_MODEL = "test-model"
    settings.BACKFLOW_LLM_API_KEY = "sk-llm-test-key"
    yield llm
    llm.stop()


@pytest.fixture
def worker(transactional_db):
    """`worker(**env)` starts `manage.py run_worker` on the test database; all are stopped after."""
    started = []

    def start(**env):
        process = Worker(**env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def everything_http():
    server = EverythingHttp()
    yield server
    server.stop()


@pytest.fixture
def everything_sse():
    server = EverythingHttp("sse")
    yield server
    server.stop()


@pytest.fixture
def listener():
    sock = Listener()
    yield sock
    sock.close()
