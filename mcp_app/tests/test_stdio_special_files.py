"""Issue 15, hole 4: local mode hung on special files. A FIFO named `integrations/a.json` stopped
`mcp_stdio` before `initialize` (reading it waits for a writer forever), and a link to /dev/zero
read forever. Each test runs a real `mcp_stdio` child, which must answer `initialize` and list the
healthy integrations, with every special or oversize file reported like a malformed one.
"""

import json
import os

import anyio

from mcp_app.tests.helpers import mcp_server, run

CRM = {"name": "crm", "baseUrl": "https://crm.example.com/api", "auth": {"type": "bearer", "secret": "{{env.CRM_TOKEN}}"},
       "endpoints": [{"name": "listContacts", "method": "get", "path": "/contacts"}]}
CONTACTS = {"path": "/contacts", "method": "get", "integrations": {"actions": [{"integration": "crm", "action": "listContacts"}]}}
LIMIT = 4096  # BACKFLOW_LOCAL_FILE_MAX_BYTES of the children below
START_SECONDS = 30  # a child that hangs fails the test here rather than hanging the run


def write_json(path, data):
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def plant_special_files(site):
    """What a hostile (or careless) folder may hold beside a healthy integration."""
    write_json(site.integration_file("crm"), CRM)
    os.mkfifo(site.integration_file("a"))  # a FIFO: opening it for reading waits for a writer
    os.symlink("/dev/zero", site.integration_file("zero"))  # reads forever
    os.symlink("/dev/urandom", site.integration_file("random"))
    os.symlink(site.root / "missing.json", site.integration_file("dangling"))
    site.integration_file("folder").mkdir()
    site.integration_file("huge").write_text('{"name": "huge", "description": "' + "x" * LIMIT + '"}', encoding="utf-8")
    write_json(site.root / "shared.json", {**CRM, "name": "linked"})
    os.symlink(site.root / "shared.json", site.integration_file("linked"))  # a link to a regular file is fine
    return {
        "a": "a FIFO (named pipe), not a regular file",
        "zero": "a character device, not a regular file",
        "random": "a character device, not a regular file",
        "dangling": "does not exist",
        "folder": "a folder, not a regular file",
        "huge": f"more than the {LIMIT} a local-mode file may hold (BACKFLOW_LOCAL_FILE_MAX_BYTES)",
    }


def test_special_integration_files_are_reported_and_the_rest_is_served(site, tmp_path):
    config = site.read_config()
    config["routes"] = [CONTACTS]
    write_json(site.config, config)
    expected = plant_special_files(site)

    async def main():
        with anyio.fail_after(START_SECONDS):
            async with mcp_server(site.mcp_config, cwd=tmp_path, env={"BACKFLOW_LOCAL_FILE_MAX_BYTES": str(LIMIT)}) as client:
                listed = await client.ok("list_integrations")
                assert [i["name"] for i in listed["integrations"]] == ["crm", "linked"]
                problems = {p["file"]: p["error"] for p in listed["problems"]}
                assert set(problems) == {str(site.integration_file(name)) for name in expected}, problems
                for name, words in expected.items():
                    assert words in problems[str(site.integration_file(name))], (name, problems)
                assert [r["path"] for r in (await client.ok("list_routes"))["routes"]] == ["/contacts"]
                # Still a working server: writes go on, and the special files stay as they were.
                await client.ok("create_integration", {"name": "stripe", "baseUrl": "https://api.stripe.com/v1"})
                assert [i["name"] for i in (await client.ok("list_integrations"))["integrations"]] == ["crm", "linked", "stripe"]
                return client.stderr()

    stderr = run(main, timeout=START_SECONDS + 30)
    assert "a.json" in stderr and "zero.json" in stderr  # also logged when loading
    assert site.integration_file("a").is_fifo() and os.readlink(site.integration_file("zero")) == "/dev/zero"


def test_a_special_config_json_is_reported_and_never_written_through(site, tmp_path):
    write_json(site.integration_file("crm"), CRM)
    site.config.unlink()
    os.mkfifo(site.config)

    async def main():
        with anyio.fail_after(START_SECONDS):
            async with mcp_server(site.mcp_config, cwd=tmp_path) as client:
                listed = await client.ok("list_integrations")
                assert [i["name"] for i in listed["integrations"]] == ["crm"]
                assert any(p["file"] == str(site.config) and "FIFO" in p["error"] for p in listed["problems"]), listed
                assert (await client.ok("list_routes"))["routes"] == []
                data, text = await client.error("create_route", CONTACTS)
                assert "config.json" in data["errors"] and "FIFO" in text

    run(main, timeout=START_SECONDS + 30)
    assert site.config.is_fifo()

    site.config.unlink()
    os.symlink("/dev/zero", site.config)

    async def zero():
        with anyio.fail_after(START_SECONDS):
            async with mcp_server(site.mcp_config, cwd=tmp_path) as client:
                listed = await client.ok("list_integrations")
                assert [i["name"] for i in listed["integrations"]] == ["crm"]
                # (mcp-config.json's paths are resolved, links included: the problem names /dev/zero)
                assert any("character device" in p["error"] for p in listed["problems"]), listed
                assert (await client.ok("list_routes"))["routes"] == []

    run(zero, timeout=START_SECONDS + 30)
    assert site.config.is_symlink() and os.readlink(site.config) == "/dev/zero"


def test_files_are_capped_in_size_both_ways(site, tmp_path):
    """An oversize config.json is reported; a write that would make a file larger than local mode
    reads back is refused (400-like isError naming what to shrink), nothing written."""
    write_json(site.integration_file("crm"), CRM)
    config = site.read_config()
    config["routes"] = [CONTACTS]
    config["notes"] = "n" * (LIMIT // 2)
    write_json(site.config, config)
    big = {"name": "big", "baseUrl": "https://big.example.com", "description": "d" * 2000,
           "endpoints": [{"name": f"e{i}", "method": "get", "path": "/x", "description": "e" * 1000} for i in range(3)]}

    async def main():
        with anyio.fail_after(START_SECONDS):
            async with mcp_server(site.mcp_config, cwd=tmp_path, env={"BACKFLOW_LOCAL_FILE_MAX_BYTES": str(LIMIT)}) as client:
                data, text = await client.error("create_integration", big)
                assert "body" in data["errors"] and "BACKFLOW_LOCAL_FILE_MAX_BYTES" in text
                data, text = await client.error("create_route", {**CONTACTS, "path": "/people", "description": "p" * 2000})
                assert "config.json" in data["errors"] and "BACKFLOW_LOCAL_FILE_MAX_BYTES" in text
                assert [r["path"] for r in (await client.ok("list_routes"))["routes"]] == ["/contacts"]

    run(main, timeout=START_SECONDS + 30)
    assert not site.integration_file("big").exists()
    assert [r["path"] for r in site.read_config()["routes"]] == ["/contacts"]

    config["notes"] = "n" * LIMIT  # a hand edit makes config.json too large to read
    write_json(site.config, config)

    async def oversize():
        with anyio.fail_after(START_SECONDS):
            async with mcp_server(site.mcp_config, cwd=tmp_path, env={"BACKFLOW_LOCAL_FILE_MAX_BYTES": str(LIMIT)}) as client:
                listed = await client.ok("list_integrations")
                assert [i["name"] for i in listed["integrations"]] == ["crm"]
                assert any(p["file"] == str(site.config) and f"more than the {LIMIT}" in p["error"] for p in listed["problems"]), listed
                data, _ = await client.error("create_route", {**CONTACTS, "path": "/people"})
                assert "config.json" in data["errors"]

    run(oversize, timeout=START_SECONDS + 30)
    assert site.read_config() == config
