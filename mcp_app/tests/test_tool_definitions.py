"""Tool definitions an LLM can trust: the tools each scope opens, hints that match what each tool
does, an outputSchema on every tool, typed and described inputs in the JSON Schema subset the
major model providers accept, and a compact tools/list. Expectations are written out here."""

import json

import mcp_types as types
import pytest
from jsonschema import Draft202012Validator

from mcp_app.registry import REGISTRY, visible_tools
from mcp_app.tests.helpers import LOCAL_TOOLS, TOOLS_BY_SCOPE, tools_for

READ_ONLY = {"list_integrations", "get_integration", "list_routes", "get_route", "list_workflows", "get_workflow",
             "list_apps", "get_app", "list_collections", "list_entities", "get_entity",
             "list_route_invocations", "list_runs", "get_run", "list_secrets"}
# Deletes, updates that replace whole lists, and runs (which call outside systems that may change things).
DESTRUCTIVE = {"delete_integration", "delete_route", "delete_workflow", "delete_app", "delete_entity",
               "update_integration", "update_route", "update_workflow", "update_app", "run_workflow",
               "test_route", "call_endpoint", "import_openapi"}
OPEN_WORLD = {"run_workflow", "test_route", "call_endpoint", "import_openapi"}
# Keywords some major providers refuse in tool input schemas (or read wrongly).
UNSUPPORTED = {"propertyNames", "patternProperties", "dependentRequired", "dependentSchemas", "if", "then", "else",
               "not", "unevaluatedProperties", "prefixItems", "contains", "$ref", "$defs", "allOf", "oneOf"}
MAX_TOOLS_LIST_BYTES = 40_000


def published():
    visible_tools(scopes=())  # every tool module is imported
    return {name: definition.to_mcp() for name, definition in REGISTRY.items()}


@pytest.mark.parametrize("scope", sorted(TOOLS_BY_SCOPE))
def test_each_scope_opens_exactly_its_tools(scope):
    assert visible_tools(scopes=(scope,)) == frozenset(TOOLS_BY_SCOPE[scope])


def test_local_mode_offers_the_integration_and_route_tools_only():
    assert visible_tools(scopes=tuple(TOOLS_BY_SCOPE), local=True) == frozenset(LOCAL_TOOLS)


def test_hints_match_what_each_tool_does():
    tools = published()
    assert set(tools) == tools_for(*TOOLS_BY_SCOPE)
    for name, tool in tools.items():
        hints = tool.annotations
        # readOnlyHint and idempotentHint default to false (sent only when true); destructiveHint and
        # openWorldHint default to true, so they are always sent.
        assert hints.read_only_hint is (True if name in READ_ONLY else None), name
        assert hints.destructive_hint is (name in DESTRUCTIVE), name
        assert hints.open_world_hint is (name in OPEN_WORLD), name
        assert hints.idempotent_hint is (True if name in READ_ONLY or name.startswith(("update_", "delete_")) else None), name
        assert tool.title and tool.description, name


def _walk(schema, where):
    yield where, schema
    for key in ("properties",):
        for name, sub in schema.get(key, {}).items():
            yield from _walk(sub, f"{where}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{where}[]")
    for index, sub in enumerate(schema.get("anyOf", [])):
        yield from _walk(sub, f"{where}|{index}")


@pytest.mark.parametrize("name", sorted(tools_for(*TOOLS_BY_SCOPE)))
def test_inputs_are_typed_described_and_in_the_common_subset(name):
    schema = published()[name].input_schema
    Draft202012Validator.check_schema(schema)
    assert schema["type"] == "object"
    for prop, spec in schema["properties"].items():
        assert spec.get("description"), f"{name}.{prop} has no description"
    for where, node in _walk(schema, name):
        assert not UNSUPPORTED & set(node), f"{where} uses {UNSUPPORTED & set(node)}"
        if where != name and "anyOf" not in node:
            assert "type" in node or "enum" in node, f"{where} has no type"


@pytest.mark.parametrize("name", sorted(tools_for(*TOOLS_BY_SCOPE)))
def test_every_tool_has_an_output_schema(name):
    schema = published()[name].output_schema
    assert schema and schema["type"] == "object", name
    Draft202012Validator.check_schema(schema)


def test_tools_list_with_every_scope_stays_compact():
    body = types.ListToolsResult(tools=list(published().values())).model_dump_json(by_alias=True, exclude_none=True)
    assert len(body.encode()) < MAX_TOOLS_LIST_BYTES, f"tools/list is {len(body.encode())} bytes"
    assert json.loads(body)["tools"]
