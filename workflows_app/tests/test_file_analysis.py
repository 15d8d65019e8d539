"""The seed's `file-analysis` example, run as written: server-filesystem (stdio) on a folder with a real
file, `read_file` through an mcp_tool, then an llm_call whose prompt carries the file's content to an
OpenAI-compatible LLM (a local HTTP server that records what it gets)."""

import json

from workflows_app import selectors
from workflows_app.models import WorkflowRun
from workflows_app.tests.helpers import add_stdio_server, filesystem_stdio, run_now

# The seed's document, unchanged but for a name (required here) and a description.
FILE_ANALYSIS = {
    "id": "file-analysis",
    "name": "File analysis",
    "description": "Read a file with the filesystem MCP server and have the LLM analyze it.",
    "workflows": [
        {
            "name": "analyze",
            "steps": [
                {"id": "read-file", "action": "read_file", "params": {"path": "{{input.filePath}}"}},
                {"id": "analyze", "action": "llm", "params": {"prompt": "Analyze this file content:\n{{steps.read-file.result}}"}},
            ],
        }
    ],
    "tools": [
        {"name": "read_file", "type": "mcp_tool", "params": {"mcpServer": "filesystem", "toolName": "read_file"}},
        {"name": "llm", "type": "llm_call"},
    ],
}

CONTENT = 'name,score\nada,"91"\ngrace,88\n'


def test_file_analysis_runs_as_in_the_seed(acme, tmp_path, fake_llm):
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "scores.csv").write_text(CONTENT)
    add_stdio_server(acme, filesystem_stdio(folder))
    api = acme.client()
    made = api.post("/api/workflows/", FILE_ANALYSIS, format="json")
    assert made.status_code == 201, made.content
    fake_llm.reply = lambda body: "Three lines of CSV: a header and two scores (91 and 88)."

    wf = selectors.workflow_get(tenant=acme.tenant, slug="file-analysis")
    run = run_now(acme, wf, {"filePath": str(folder / "scores.csv")})

    assert run.status == WorkflowRun.Status.SUCCEEDED, run.error
    assert run.output == "Three lines of CSV: a header and two scores (91 and 88)."
    assert run.entry == "analyze" and run.started_at <= run.finished_at

    # The LLM got the file's content in the prompt, with the operator's model and key.
    assert len(fake_llm.requests) == 1
    request = fake_llm.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["body"]["model"] == "test-model"
    assert request["headers"]["Authorization"] == "Bearer sk-llm-test-key"
    prompt = request["body"]["messages"][-1]
    assert prompt["role"] == "user" and prompt["content"].startswith("Analyze this file content:\n")
    # server-filesystem answers with structuredContent {"content": text}: the step's result is that
    # object, and a placeholder inside a longer string renders it as JSON.
    passed = json.loads(prompt["content"].removeprefix("Analyze this file content:\n"))
    assert passed == {"content": CONTENT}

    read, analyze = selectors.run_steps(run=run)
    assert (read.position, read.step_id, read.action, read.status, read.attempts) == (0, "read-file", "read_file", "succeeded", 1)
    assert read.params == {"path": str(folder / "scores.csv")}  # resolved, not the template
    assert read.result == {"content": CONTENT} and read.error == ""
    assert (analyze.step_id, analyze.action, analyze.status) == ("analyze", "llm", "succeeded")
    assert analyze.params == {"prompt": prompt["content"]}
    assert analyze.result == run.output
    for record in (read, analyze):
        assert record.duration_ms is not None and record.duration_ms > 0
    # The LLM key is configuration, never part of what a run stores.
    stored = json.dumps([run.to_document([read, analyze])])
    assert "sk-llm-test-key" not in stored

    # The same document over REST: the run with its steps.
    shown = api.get(f"/api/runs/{run.id}/").json()
    assert shown["status"] == "succeeded" and shown["workflow"] == "file-analysis" and shown["output"] == run.output
    assert [(s["id"], s["status"]) for s in shown["steps"]] == [("read-file", "succeeded"), ("analyze", "succeeded")]
    assert shown["steps"][0]["params"] == {"path": str(folder / "scores.csv")} and shown["steps"][0]["durationMs"] > 0

    # `.content` reaches the bare text; the kept connection is reused (no second process).
    tweaked = api.patch("/api/workflows/file-analysis/", {"workflows": [{"name": "analyze", "steps": [
        FILE_ANALYSIS["workflows"][0]["steps"][0],
        {"id": "analyze", "action": "llm", "params": {"prompt": "Analyze this file content:\n{{steps.read-file.result.content}}",
                                                      "system": "You review CSV files."}},
    ]}]}, format="json")
    assert tweaked.status_code == 200, tweaked.content
    again = run_now(acme, selectors.workflow_get(tenant=acme.tenant, slug="file-analysis"), {"filePath": str(folder / "scores.csv")})
    assert again.status == "succeeded", again.error
    assert fake_llm.requests[-1]["body"]["messages"] == [
        {"role": "system", "content": "You review CSV files."},
        {"role": "user", "content": "Analyze this file content:\n" + CONTENT},
    ]


def test_outside_the_folder_the_read_fails_and_the_llm_is_not_called(acme, tmp_path, fake_llm):
    folder = tmp_path / "files"
    folder.mkdir()
    secret = tmp_path / "outside.txt"
    secret.write_text("not yours")
    add_stdio_server(acme, filesystem_stdio(folder))
    assert acme.client().post("/api/workflows/", FILE_ANALYSIS, format="json").status_code == 201

    run = run_now(acme, selectors.workflow_get(tenant=acme.tenant, slug="file-analysis"), {"filePath": str(secret)})
    assert run.status == "failed"
    assert run.error.startswith("Step 'read-file' (read_file) failed: the tool reported an error:")
    assert "Access denied" in run.error and run.output is None
    assert fake_llm.requests == []
    steps = list(selectors.run_steps(run=run))
    assert [(s.step_id, s.status) for s in steps] == [("read-file", "failed")]
    assert "Access denied" in steps[0].error and steps[0].result is None


def test_llm_errors_fail_the_step_clearly(acme, tmp_path, fake_llm, settings):
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "a.txt").write_text("x")
    add_stdio_server(acme, filesystem_stdio(folder))
    assert acme.client().post("/api/workflows/", FILE_ANALYSIS, format="json").status_code == 201
    wf = selectors.workflow_get(tenant=acme.tenant, slug="file-analysis")

    settings.BACKFLOW_LLM_BASE_URL = fake_llm.base_url + "/nowhere"  # the LLM answers 404
    run = run_now(acme, wf, {"filePath": str(folder / "a.txt")})
    assert run.status == "failed" and "The LLM answered 404" in run.error, run.error

    settings.BACKFLOW_LLM_BASE_URL = ""
    run = run_now(acme, wf, {"filePath": str(folder / "a.txt")})
    assert run.status == "failed" and "No LLM is configured" in run.error and "BACKFLOW_LLM_BASE_URL" in run.error
