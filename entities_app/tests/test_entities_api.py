import json

import pytest

from entities_app import services

MEMBERS = {
    "name": "members",
    "description": "Studio members",
    "schema": {
        "type": "object",
        "properties": {
            "name": {"type": "string"}, "status": {"type": "string", "enum": ["active", "paused"]},
            "price": {"type": "number"}, "tags": {"type": "array", "items": {"type": "string"}},
            "address": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
        "required": ["name"],
        "additionalProperties": False,
    },
}
PEOPLE = [
    {"name": "Ana", "status": "active", "price": 10, "tags": ["yoga", "pilates"]},
    {"name": "Ben", "status": "paused", "price": 25.5, "tags": ["spin"]},
    {"name": "Cleo", "status": "active", "price": 40, "tags": ["yoga"]},
    {"name": "Dan", "status": "active"},
    {"name": "Eve yogi", "status": "paused", "price": 5, "tags": []},
]


@pytest.fixture
def members(acme):
    services.collection_create(tenant=acme.tenant, actor=acme.actor, document=MEMBERS)
    for person in PEOPLE:
        services.entity_create(tenant=acme.tenant, actor=acme.actor, collection_name="members", data=person)
    return acme.client()


def names(client, **params):
    if "filters" in params:
        params["filters"] = json.dumps(params["filters"])
    response = client.get("/api/collections/members/entities/", params)
    assert response.status_code == 200, response.json()
    return [e["data"]["name"] for e in response.json()["results"]]


@pytest.mark.parametrize("filters, expected", [
    ({"status": "active"}, {"Ana", "Cleo", "Dan"}),
    ({"status": {"eq": "paused"}}, {"Ben", "Eve yogi"}),
    ({"status": {"ne": "active"}}, {"Ben", "Eve yogi"}),
    ({"price": {"gt": 10}}, {"Ben", "Cleo"}),
    ({"price": {"gte": 10}}, {"Ana", "Ben", "Cleo"}),
    ({"price": {"lt": 10}}, {"Eve yogi"}),
    ({"price": {"lte": 10, "gt": 5}}, {"Ana"}),
    ({"name": {"in": ["Ana", "Dan", "Zed"]}}, {"Ana", "Dan"}),
    ({"tags": {"contains": "yoga"}}, {"Ana", "Cleo"}),
    ({"name": {"contains": "yog"}}, {"Eve yogi"}),
    ({"name": {"icontains": "EVE"}}, {"Eve yogi"}),
    ({"price": {"exists": False}}, {"Dan"}),
    ({"price": {"exists": True}, "status": "active"}, {"Ana", "Cleo"}),
    ({"createdAt": {"gte": "2000-01-01T00:00:00Z"}}, {p["name"] for p in PEOPLE}),
])
def test_every_filter_operator(members, filters, expected):
    assert set(names(members, filters=filters)) == expected


def test_sort_and_cursor_pages_are_stable_under_concurrent_inserts(members, acme):
    assert names(members, sort="price") == ["Eve yogi", "Ana", "Ben", "Cleo", "Dan"]  # missing last
    assert names(members, sort="-price") == ["Cleo", "Ben", "Ana", "Eve yogi", "Dan"]
    assert names(members, sort="status,-name") == ["Dan", "Cleo", "Ana", "Eve yogi", "Ben"]
    seen, cursor = [], None
    while True:
        params = {"sort": "price", "limit": 2, **({"cursor": cursor} if cursor else {})}
        body = members.get("/api/collections/members/entities/", params).json()
        seen += [e["data"]["name"] for e in body["results"]]
        if len(seen) == 2:  # an insert between pages is neither repeated nor does it shift the rest
            services.entity_create(tenant=acme.tenant, actor=acme.actor, collection_name="members", data={"name": "Aaron", "price": 1})
        cursor = body["nextCursor"]
        if not cursor:
            break
    assert seen == ["Eve yogi", "Ana", "Ben", "Cleo", "Dan"]


def test_cursor_pagination_by_creation_time(members):
    first = members.get("/api/collections/members/entities/", {"limit": 3}).json()
    second = members.get("/api/collections/members/entities/", {"limit": 3, "cursor": first["nextCursor"]}).json()
    got = [e["data"]["name"] for e in first["results"] + second["results"]]
    assert sorted(got) == sorted(p["name"] for p in PEOPLE) and second["nextCursor"] is None


@pytest.mark.parametrize("params, field", [
    ({"filters": json.dumps({"price": {"between": [1, 2]}})}, "filters.price.between"),
    ({"filters": json.dumps({"colour": "red"})}, "filters.colour"),
    ({"filters": json.dumps({"price": {"in": 3}})}, "filters.price.in"),
    ({"filters": json.dumps({"price": {"gt": {"x": 1}}})}, "filters.price.gt"),
    ({"filters": "{not json"}, "filters"),
    ({"sort": "colour"}, "sort"),
    ({"limit": 501}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"cursor": "forged"}, "cursor"),
])
def test_bad_queries_name_the_problem(members, params, field):
    response = members.get("/api/collections/members/entities/", params)
    assert response.status_code == 400, response.json()
    assert field in response.json()["errors"], response.json()


def test_cursor_of_another_query_is_refused(members):
    cursor = members.get("/api/collections/members/entities/", {"limit": 1}).json()["nextCursor"]
    response = members.get("/api/collections/members/entities/", {"limit": 1, "sort": "price", "cursor": cursor})
    assert response.status_code == 400 and "cursor" in response.json()["errors"]


def test_schema_validation_and_versions(members):
    bad = members.post("/api/collections/members/entities/", {"data": {"name": 5, "status": "gone", "extra": 1}}, format="json")
    assert bad.status_code == 400
    assert {"data.name", "data.status", "data"} <= set(bad.json()["errors"]), bad.json()
    missing = members.post("/api/collections/members/entities/", {"data": {"status": "active"}}, format="json")
    assert "data.name" in missing.json()["errors"]
    created = members.post("/api/collections/members/entities/", {"data": {"name": "Fay"}}, format="json").json()
    url = f"/api/collections/members/entities/{created['id']}/"
    ok = members.patch(url, {"data": {"status": "active"}}, format="json", HTTP_IF_MATCH="1")
    assert ok.status_code == 200 and ok.json()["version"] == 2 and ok.json()["data"] == {"name": "Fay", "status": "active"}
    stale = members.put(url, {"data": {"name": "Fay 2"}, "version": 1}, format="json")
    assert stale.status_code == 409
    assert members.get(url).json()["data"]["name"] == "Fay"
    assert members.delete(url, HTTP_IF_MATCH="1").status_code == 409
    assert members.delete(url, HTTP_IF_MATCH="2").status_code == 204
    assert members.get(url).status_code == 404


def test_collection_schema_checks(acme):
    client = acme.client()
    bad = client.post("/api/collections/", {"name": "x", "schema": {"type": "nonsense"}}, format="json")
    assert bad.status_code == 400 and "schema" in " ".join(bad.json()["errors"]), bad.json()
    assert client.post("/api/collections/", {"name": "x"}, format="json").status_code == 201
    client.post("/api/collections/x/entities/", {"data": {"n": 1}}, format="json")
    tighter = client.patch("/api/collections/x/", {"schema": {"type": "object", "required": ["name"]}}, format="json")
    assert tighter.status_code == 409
    assert client.post("/api/collections/", {"name": "x"}, format="json").status_code == 409


def test_oversized_entity_is_refused(members, settings):
    settings.BACKFLOW_ENTITY_MAX_BYTES = 100
    response = members.post("/api/collections/members/entities/", {"data": {"name": "x" * 200}}, format="json")
    assert response.status_code == 400 and "data" in response.json()["errors"]


def test_apps_validate_bindings(members):
    app = {"id": "studio", "name": "Studio", "pages": [{"path": "", "title": "Members", "components": [
        {"type": "table", "binding": {"collection": "members", "fields": ["name", "status"], "sort": "name"}},
        {"type": "stat", "props": {"label": "Active", "op": "count"}, "binding": {"collection": "members", "filters": {"status": "active"}}},
        {"type": "markdown", "props": {"text": "# Hello"}},
    ]}]}
    created = members.post("/api/apps/", app, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["url"] == "/apps/acme/studio/"
    broken = {**app, "id": "broken", "pages": [{"path": "", "components": [
        {"type": "table", "binding": {"collection": "nope"}},
        {"type": "list", "binding": {"collection": "members", "fields": ["colour"]}},
        {"type": "form", "binding": {"collection": "members", "filters": {"price": {"zz": 1}}}},
        {"type": "stat", "props": {"op": "sum"}, "binding": {"collection": "members"}},
    ]}]}
    response = members.post("/api/apps/", broken, format="json")
    assert response.status_code == 400
    assert set(response.json()["errors"]) >= {
        "pages[0].components[0].binding.collection", "pages[0].components[1].binding.fields[0]",
        "pages[0].components[2].binding.filters.price.zz", "pages[0].components[3].props.field",
    }, response.json()
    assert members.delete("/api/collections/members/").status_code == 409
