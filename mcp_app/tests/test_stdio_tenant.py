"""`mcp_stdio --tenant SLUG`: the same tools on one tenant's database records, audited.

The children open the test database (see conftest.py), so the tests commit their rows
(`transaction=True`) and read back what the children wrote.
"""

import pytest

from tests.live import child_database_url

from integrations_app.models import Integration, Route
from mcp_app.tests.helpers import (
    LOCAL_TOOLS,
    mcp_server,
    run,
    run_command,
)
from tenants.models import AuditEvent

pytestmark = pytest.mark.django_db(transaction=True)

CRM = {"name": "crm", "displayName": "CRM", "baseUrl": "https://crm.acme.example/api",
       "auth": {"type": "bearer", "secret": "crm_token"},
       "endpoints": [{"name": "listContacts", "method": "get", "path": "/contacts"}]}
CONTACTS = {"path": "/contacts", "method": "get", "integrations": {"actions": [{"integration": "crm", "action": "listContacts"}]}}


def db_env():
    return {"DATABASE_URL": child_database_url()}


def tool_calls(tenant):
    return list(AuditEvent.objects.for_tenant(tenant).filter(action="mcp.tool_call").order_by("created_at", "id"))


def test_tenants_do_not_see_each_other_and_every_call_is_audited(acme, globex):
    acme_calls, globex_calls = [], []

    async def main():
        env = db_env()
        async with mcp_server("--tenant", "acme", env=env) as a, mcp_server("--tenant", "globex", env=env) as g:

            async def as_acme(kind, tool, arguments):
                acme_calls.append(tool)
                return await getattr(a, kind)(tool, arguments)

            async def as_globex(kind, tool, arguments):
                globex_calls.append(tool)
                return await getattr(g, kind)(tool, arguments)

            assert LOCAL_TOOLS <= set(await a.tools())
            created = await as_acme("ok", "create_integration", CRM)
            assert created["baseUrl"] == CRM["baseUrl"]
            route = await as_acme("ok", "create_route", CONTACTS)
            # {{env.…}} is only for local mode
            data, _ = await as_acme("error", "create_integration", {**CRM, "name": "mail", "auth": {"type": "bearer", "secret": "{{env.MAIL}}"}})
            assert "auth.secret" in data["errors"]

            # globex sees none of it, by any tool
            assert await as_globex("ok", "list_integrations", {}) == {"integrations": []}
            assert await as_globex("ok", "list_routes", {}) == {"routes": []}
            for tool, arguments in [("get_integration", {"name": "crm"}),
                                    ("update_integration", {"name": "crm", "description": "taken over"}),
                                    ("delete_integration", {"name": "crm"})]:
                data, _ = await as_globex("error", tool, arguments)
                assert data["error"].startswith("No integration named 'crm'"), data
            for tool, arguments in [("get_route", {"path": "/contacts", "method": "get"}),
                                    ("update_route", {"path": "/contacts", "method": "get", "description": "x"}),
                                    ("delete_route", {"path": "/contacts", "method": "get"})]:
                data, _ = await as_globex("error", tool, arguments)
                assert data["error"].startswith("No route GET /contacts"), data
            data, _ = await as_globex("error", "create_route", CONTACTS)  # acme's integration is not globex's
            assert "integrations.actions[0].integration" in data["errors"]

            # names are per tenant: globex may have its own crm
            await as_globex("ok", "create_integration", {**CRM, "baseUrl": "https://crm.globex.example/api"})
            await as_globex("ok", "create_route", {**CONTACTS, "description": "globex contacts"})
            assert (await as_acme("ok", "get_integration", {"name": "crm"}))["baseUrl"] == CRM["baseUrl"]
            assert await as_acme("ok", "get_route", {"path": "/contacts", "method": "get"}) == route
            await as_acme("ok", "update_integration", {"name": "crm", "description": "acme only"})
            assert (await as_globex("ok", "get_integration", {"name": "crm"}))["description"] == ""
            await as_globex("ok", "delete_route", {"path": "/contacts", "method": "get"})
            await as_globex("ok", "delete_integration", {"name": "crm"})
            assert (await as_acme("ok", "list_routes", {}))["routes"] == [route]

    run(main)

    assert [i.name for i in Integration.objects.for_tenant(acme.tenant)] == ["crm"]
    assert Integration.objects.for_tenant(acme.tenant).get().description == "acme only"
    assert Route.objects.for_tenant(acme.tenant).count() == 1
    assert not Integration.objects.for_tenant(globex.tenant).exists()
    assert not Route.objects.for_tenant(globex.tenant).exists()

    for ctx, calls in ((acme, acme_calls), (globex, globex_calls)):
        events = tool_calls(ctx.tenant)
        assert [e.object_id for e in events] == calls  # every call, in order, for the right tenant
        assert all(e.principal == "system:mcp_stdio" and e.object_type == "tool" for e in events)
        assert all(e.summary["outcome"] == "ok" or e.summary["outcome"].startswith("error") for e in events)
    first = tool_calls(acme.tenant)[0]
    assert first.summary["outcome"] == "ok" and first.summary["target"]["name"] == "crm" and "baseUrl" in first.summary["arguments"]
    refused = next(e for e in tool_calls(globex.tenant) if e.object_id == "get_integration")
    assert refused.summary["outcome"].startswith("error") and refused.summary["target"] == {"name": "crm"}
    # the writes themselves are audited too, by the same principal
    writes = AuditEvent.objects.for_tenant(acme.tenant).filter(action="integration.create")
    assert [(e.object_id, e.principal) for e in writes] == [("crm", "system:mcp_stdio")]


def test_unknown_tenant_is_a_clear_error():
    proc = run_command("--tenant", "nosuch", env=db_env())
    assert proc.returncode != 0 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "nosuch" in lines[0] and "Traceback" not in proc.stderr, proc.stderr


def test_inactive_tenant_is_refused(acme):
    acme.tenant.is_active = False
    acme.tenant.save(update_fields=["is_active"])
    proc = run_command("--tenant", "acme", env=db_env())
    assert proc.returncode != 0 and proc.stdout == ""
    assert "acme" in proc.stderr and "inactive" in proc.stderr, proc.stderr


def test_tenant_and_config_together_are_refused(site):
    proc = run_command(site.mcp_config, "--tenant", "acme", env=db_env())
    assert proc.returncode != 0 and proc.stdout == ""
    assert "--tenant" in proc.stderr, proc.stderr
