"""A collection's JSON Schema is tenant input (issue 14, the outside review's findings 1, 2, 8):
no `$ref` leaves the document (jsonschema fetched http(s) and file: refs: a request outside the
egress guard, a port scanner and a local file read), patterns run in linear time (`^(a+)+$`
froze the process), `uniqueItems` is linear, and a schema that loops is a 400, never a 500."""

import time

import pytest

from entities_app.models import Collection

EVIL_PATTERN = "^(a+)+$"


def create_collection(ctx, schema, name="things"):
    return ctx.client().post("/api/collections/", {"name": name, "schema": schema}, format="json")


def create_entity(ctx, data, name="things"):
    return ctx.client().post(f"/api/collections/{name}/entities/", {"data": data}, format="json")


def obj(**properties):
    return {"type": "object", "properties": properties}


@pytest.mark.parametrize("target", [
    "http://127.0.0.1:{port}/schema.json", "https://example.invalid/s.json", "file:///etc/hostname",
    "urn:example:thing", "other.json#/x", "//127.0.0.1:{port}/x",
])
def test_a_ref_outside_the_schema_is_refused_and_never_fetched(acme, upstream, target):
    target = target.format(port=upstream.port)
    for schema in (obj(a={"$ref": target}), {**obj(a={"type": "string"}), "$defs": {"x": {"$dynamicRef": target}}}):
        response = create_collection(acme, schema)
        assert response.status_code == 400, response.content
        assert any("outside this schema" in m for ms in response.json()["errors"].values() for m in ms), response.json()
    assert upstream.calls() == []
    assert not Collection.objects.for_tenant(acme.tenant).exists()


def test_a_stored_schema_with_an_outside_ref_is_never_fetched_when_applied(acme, upstream):
    """A schema saved before the rule (or written by hand) applies to nothing outside: a 400."""
    assert create_collection(acme, obj(a={"type": "string"})).status_code == 201
    Collection.objects.for_tenant(acme.tenant).filter(name="things").update(schema=obj(a={"$ref": f"{upstream.url}/s.json"}))
    response = create_entity(acme, {"a": {"x": 1}})
    assert response.status_code == 400 and "does not resolve" in str(response.json()), response.content
    assert upstream.calls() == []


def test_refs_inside_the_schema_work(acme):
    schema = {**obj(a={"$ref": "#/$defs/positive"}), "$defs": {"positive": {"type": "integer", "minimum": 1}}}
    assert create_collection(acme, schema).status_code == 201
    assert create_entity(acme, {"a": 3}).status_code == 201
    refused = create_entity(acme, {"a": 0})
    assert refused.status_code == 400 and "data.a" in refused.json()["errors"], refused.content


def test_a_schema_that_loops_is_refused_and_a_stored_one_is_a_400(acme):
    looping = {"$ref": "#/$defs/x", "$defs": {"x": {"$ref": "#/$defs/x"}}, "type": "object"}
    response = create_collection(acme, looping)
    assert response.status_code == 400 and "loops" in str(response.json()), response.content
    assert create_collection(acme, obj(a={"type": "string"})).status_code == 201
    Collection.objects.for_tenant(acme.tenant).filter(name="things").update(schema=looping)
    response = create_entity(acme, {"a": "x"})
    assert response.status_code == 400 and "loops" in str(response.json()), response.content


def test_a_catastrophic_pattern_runs_in_linear_time(acme):
    assert create_collection(acme, obj(name={"type": "string", "pattern": EVIL_PATTERN})).status_code == 201
    started = time.monotonic()
    response = create_entity(acme, {"name": "a" * 5000 + "!"})  # Python's re: longer than the universe
    assert time.monotonic() - started < 2, "the pattern backtracked"
    assert response.status_code == 400 and "data.name" in response.json()["errors"], response.content
    assert create_entity(acme, {"name": "aaa"}).status_code == 201


def test_patterns_re2_cannot_run_and_pattern_properties_are_refused(acme):
    for schema, where in ((obj(a={"type": "string", "pattern": r"(a)\1"}), "schema.properties.a.pattern"),
                          (obj(a={"type": "string", "pattern": r"(?=a)a"}), "schema.properties.a.pattern"),
                          ({"type": "object", "patternProperties": {EVIL_PATTERN: {}}}, "schema.patternProperties")):
        response = create_collection(acme, schema)
        assert response.status_code == 400 and where in response.json()["errors"], response.content


def test_unique_items_is_linear_and_keeps_json_equality(acme):
    assert create_collection(acme, obj(items={"type": "array", "uniqueItems": True})).status_code == 201
    many = [{"n": i, "tags": ["x"]} for i in range(6000)]
    started = time.monotonic()
    assert create_entity(acme, {"items": many}).status_code == 201
    assert create_entity(acme, {"items": many + [{"tags": ["x"], "n": 5}]}).status_code == 400  # key order does not matter
    assert time.monotonic() - started < 3, "uniqueItems compared items pairwise"
    assert create_entity(acme, {"items": [1, 1.0]}).status_code == 400  # equal numbers
    assert create_entity(acme, {"items": [1, True, "1"]}).status_code == 201  # not equal in JSON
