"""More of the entity REST API: cursor pages over 120 entities while others insert, timestamp
filters with an updatedAt sort, JSON null values, typed comparisons, exact equality, bad timestamp
values, and create/read/update/delete of collections, entities and apps.

(The operator table, the basic cursor walk and the validation errors are in test_entities_api.py.)
"""

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from entities_app import services
from entities_app.models import Entity

URL = "/api/collections/{}/entities/"
ITEMS = {
    "name": "items",
    "schema": {
        "type": "object",
        "properties": {"n": {"type": "integer"}, "price": {"type": "number"}, "status": {"type": "string"}},
        "required": ["n"],
        "additionalProperties": False,
    },
}


def listing(client, collection, **params):
    if "filters" in params:
        params["filters"] = json.dumps(params["filters"])
    response = client.get(URL.format(collection), params)
    assert response.status_code == 200, response.content
    return response.json()


def create(client, collection, data):
    response = client.post(URL.format(collection), {"data": data}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def walk(client, collection, limit, between_pages=lambda page: None, **params):
    """Every page of a listing, following nextCursor; between_pages(page number) runs after each page."""
    seen, cursor, pages = [], None, 0
    while True:
        body = listing(client, collection, limit=limit, **params, **({"cursor": cursor} if cursor else {}))
        assert len(body["results"]) <= limit
        seen += body["results"]
        pages += 1
        assert pages < 100, "the cursor never ended"
        cursor = body["nextCursor"]
        if not cursor:
            return seen, pages
        between_pages(pages)


def expected_order(entities, sort):
    """The documented order: sort keys (missing values last, ascending or descending), then the id."""
    def key(entity):
        parts = []
        for spec in sort:
            field, desc = spec.lstrip("-"), spec.startswith("-")
            value = entity[field] if field in ("createdAt", "updatedAt") else entity["data"].get(field)
            if value is not None and field in ("createdAt", "updatedAt"):
                value = datetime.fromisoformat(value).timestamp()
            if value is None:
                parts.append((1, 0))
            else:
                parts.append((0, -value if desc else value) if isinstance(value, (int, float)) else (0, value))
        return (*parts, uuid.UUID(entity["id"]))

    assert all(not (s.startswith("-") and s.lstrip("-") == "status") for s in sort)  # strings only ascending here
    return [e["id"] for e in sorted(entities, key=key)]


@pytest.mark.parametrize("sort", [None, "price", "-price", "status,-price", "-updatedAt"])
def test_cursor_pages_over_120_entities_with_concurrent_inserts(acme, sort):
    client = acme.client()
    services.collection_create(tenant=acme.tenant, actor=acme.actor, document=ITEMS)
    originals = []
    for n in range(120):
        data = {"n": n, "status": ("active", "paused", "gone")[n % 3]}
        if n % 11:  # every eleventh has no price: those sort last either way
            data["price"] = (n * 7) % 13  # many ties, broken by the id
        originals.append(create(client, "items", data))
    inserted = []

    def insert(page):
        # Another writer adds entities that sort before, among and after the ones still to come.
        for price in (-1, 6, 99):
            inserted.append(create(client, "items", {"n": 1000 + len(inserted), "price": price, "status": "active"}))
        create(client, "items", {"n": 2000 + len(inserted), "status": "active"})  # no price

    params = {"sort": sort} if sort else {}
    seen, pages = walk(client, "items", 25, between_pages=insert, **params)

    ids = [e["id"] for e in seen]
    assert len(ids) == len(set(ids)), "an entity was listed twice"
    original_ids = {e["id"] for e in originals}
    listed_originals = [i for i in ids if i in original_ids]
    assert len(listed_originals) == 120, f"{120 - len(listed_originals)} original entities were skipped"
    assert pages >= 5
    sort_keys = (sort or "-createdAt").split(",")
    assert listed_originals == expected_order(originals, sort_keys)
    # Whatever else was listed is in the same order too (each page continues where the last stopped).
    by_id = {e["id"]: e for e in seen}
    assert ids == expected_order([by_id[i] for i in ids], sort_keys)
    if sort in (None, "-updatedAt"):
        assert not set(ids) - original_ids, "newest-first pages never show entities created after page 1"


def _set_created(acme, entity_id, moment):
    Entity.objects.for_tenant(acme.tenant).filter(pk=entity_id).update(created_at=moment, updated_at=moment)


def test_timestamp_filters_and_updated_at_sort(acme):
    client = acme.client()
    services.collection_create(tenant=acme.tenant, actor=acme.actor, document=ITEMS)
    day = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    made = {}
    for n in range(6):  # created on Jan 1 … Jan 6 at noon
        made[n] = create(client, "items", {"n": n, "status": "active" if n % 2 else "paused"})["id"]
        _set_created(acme, made[n], day + timedelta(days=n))

    def ns(**params):
        return [e["data"]["n"] for e in listing(client, "items", **params)["results"]]

    def iso(days):
        return (day + timedelta(days=days)).isoformat().replace("+00:00", "Z")

    assert ns(filters={"createdAt": {"gte": iso(3)}}, sort="createdAt") == [3, 4, 5]
    assert ns(filters={"createdAt": {"gt": iso(3)}}, sort="createdAt") == [4, 5]
    assert ns(filters={"createdAt": {"lt": iso(2)}}, sort="createdAt") == [0, 1]
    assert ns(filters={"createdAt": {"lte": iso(2), "gt": iso(0)}}, sort="-createdAt") == [2, 1]
    assert ns(filters={"createdAt": iso(4)}) == [4]
    assert ns(filters={"createdAt": {"eq": (day + timedelta(days=4)).isoformat()}}) == [4]  # +00:00 form
    assert ns(filters={"createdAt": {"ne": iso(4)}}, sort="createdAt") == [0, 1, 2, 3, 5]
    assert ns(filters={"createdAt": {"gte": iso(1)}, "status": "active"}, sort="createdAt") == [1, 3, 5]
    # Another time zone names the same instant.
    assert ns(filters={"createdAt": {"gte": "2026-01-04T13:00:00+01:00"}}, sort="createdAt") == [3, 4, 5]

    # Edit 4, then 1, then 5 (each write moves updatedAt to now); the rest keep January's stamp.
    updated = {}
    for n in (4, 1, 5):
        response = client.patch(URL.format("items") + f"{made[n]}/", {"data": {"status": "edited"}}, format="json")
        assert response.status_code == 200, response.content
        updated[n] = response.json()["updatedAt"]
    assert updated[4] <= updated[1] <= updated[5]
    assert ns(sort="-updatedAt") == [5, 1, 4, 3, 2, 0]
    assert ns(sort="updatedAt") == [0, 2, 3, 4, 1, 5]
    assert ns(filters={"updatedAt": {"gt": updated[4]}}, sort="-updatedAt") == [5, 1]
    assert ns(filters={"updatedAt": {"gte": "2026-02-01T00:00:00Z"}, "createdAt": {"lt": iso(5)}}, sort="updatedAt") == [4, 1]
    # The same through cursor pages of one entity each.
    seen, pages = walk(client, "items", 1, filters={"updatedAt": {"lt": "2026-02-01T00:00:00Z"}}, sort="-updatedAt")
    assert [e["data"]["n"] for e in seen] == [3, 2, 0] and pages == 3
    seen, _ = walk(client, "items", 2, sort="updatedAt,-createdAt")
    assert [e["data"]["n"] for e in seen] == [0, 2, 3, 4, 1, 5]


@pytest.mark.parametrize("filters, field", [
    ({"createdAt": {"gte": "yesterday"}}, "filters.createdAt"),
    ({"createdAt": "2026-13-45T00:00:00Z"}, "filters.createdAt"),
    ({"updatedAt": {"lt": 5}}, "filters.updatedAt"),
    ({"createdAt": {"in": ["not a time"]}}, "filters.createdAt"),
])
def test_bad_timestamps_are_400_naming_the_filter(acme, filters, field):
    client = acme.client()
    services.collection_create(tenant=acme.tenant, actor=acme.actor, document=ITEMS)
    create(client, "items", {"n": 1})
    response = client.get(URL.format("items"), {"filters": json.dumps(filters)})
    assert response.status_code == 400, response.content
    assert any(key.startswith(field) for key in response.json()["errors"]), response.json()


NOTES = [  # a collection without a schema: any JSON value, or none at all
    {"name": "a", "price": 3}, {"name": "b", "price": None}, {"name": "c"}, {"name": "d", "price": 1},
    {"name": "e", "price": None}, {"name": "f", "price": 2}, {"name": "g"}, {"name": "h", "price": 2},
]


@pytest.fixture
def notes(acme):
    services.collection_create(tenant=acme.tenant, actor=acme.actor, document={"name": "notes"})
    client = acme.client()
    return client, [create(client, "notes", data) for data in NOTES]


@pytest.mark.parametrize("sort", ["price", "-price", "-price,name"])
def test_json_null_sorts_with_missing_values_and_pages_skip_nothing(notes, sort):
    client, made = notes
    full = [e["data"]["name"] for e in listing(client, "notes", sort=sort)["results"]]
    numbers = [e["data"]["name"] for e in sorted(
        (e for e in made if e["data"].get("price") is not None),
        key=lambda e: (e["data"]["price"] * (-1 if sort.startswith("-") else 1), e["data"]["name"] if "," in sort else uuid.UUID(e["id"])))]
    assert full[:4] == numbers, full
    assert sorted(full[4:]) == ["b", "c", "e", "g"], f"null and missing prices both sort last: {full}"
    for limit in (1, 2, 3):
        seen, _ = walk(client, "notes", limit, sort=sort)
        assert [e["data"]["name"] for e in seen] == full, (limit, sort)


def test_comparisons_match_only_values_of_the_same_type(notes):
    client, _ = notes
    create(client, "notes", {"name": "i", "price": "cheap"})
    create(client, "notes", {"name": "j", "price": True})

    def names(filters):
        return sorted(e["data"]["name"] for e in listing(client, "notes", filters=filters)["results"])

    assert names({"price": {"lt": 3}}) == ["d", "f", "h"]
    assert names({"price": {"lte": 3}}) == ["a", "d", "f", "h"]
    assert names({"price": {"gt": 1}}) == ["a", "f", "h"]
    assert names({"price": {"gte": 0}}) == ["a", "d", "f", "h"]
    assert names({"price": {"gte": "a"}}) == ["i"]
    assert names({"price": None}) == ["b", "e"]
    assert names({"price": {"exists": False}}) == ["c", "g"]


def test_equality_on_objects_and_lists_is_exact(acme):
    client = acme.client()
    services.collection_create(tenant=acme.tenant, actor=acme.actor, document={"name": "places"})
    for name, data in [("exact", {"address": {"city": "Oslo"}, "tags": ["a", "b"]}),
                       ("more", {"address": {"city": "Oslo", "zip": "0150"}, "tags": ["a", "b", "c"]}),
                       ("other", {"address": {"city": "Bergen"}, "tags": ["b", "a"]})]:
        create(client, "places", {"name": name, **data})

    def names(filters):
        return sorted(e["data"]["name"] for e in listing(client, "places", filters=filters)["results"])

    assert names({"address": {"eq": {"city": "Oslo"}}}) == ["exact"]
    assert names({"tags": ["a", "b"]}) == ["exact"]
    assert names({"tags": {"ne": ["a", "b"]}}) == ["more", "other"]
    assert names({"tags": {"contains": "c"}}) == ["more"]
    assert names({"address": {"in": [{"city": "Bergen"}, {"city": "Paris"}]}}) == ["other"]


def test_collection_entity_and_app_crud_over_rest(acme):
    client = acme.client()
    # collections
    created = client.post("/api/collections/", {"name": "members", "description": "people", "schema": ITEMS["schema"]}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["name"] == "members" and created.json()["schema"] == ITEMS["schema"]
    assert client.post("/api/collections/", {"name": "members"}, format="json").status_code == 409
    assert client.post("/api/collections/", {"name": "Bad Name"}, format="json").json()["errors"].keys() == {"name"}
    assert client.post("/api/collections/", ["members"], format="json").status_code == 400
    listed = client.get("/api/collections/").json()
    assert [c["name"] for c in listed["results"]] == ["members"]
    assert client.get("/api/collections/members/").json()["description"] == "people"
    assert client.get("/api/collections/nope/").status_code == 404
    patched = client.patch("/api/collections/members/", {"description": "studio people"}, format="json")
    assert patched.status_code == 200 and patched.json()["schema"] == ITEMS["schema"]
    renamed = client.patch("/api/collections/members/", {"name": "people"}, format="json")
    assert renamed.status_code == 400 and "name" in renamed.json()["errors"]
    replaced = client.put("/api/collections/members/", {"name": "members", "schema": None}, format="json")
    assert replaced.status_code == 200 and replaced.json()["schema"] is None and replaced.json()["description"] == ""

    # entities
    url = URL.format("members")
    entity = create(client, "members", {"n": 1, "free": "form"})  # no schema now
    assert entity["version"] == 1 and entity["collection"] == "members"
    assert client.get(url + f"{entity['id']}/").json() == entity
    assert client.get(url + "not-a-uuid/").status_code == 404
    assert client.get(URL.format("nope")).status_code == 404
    assert client.post(URL.format("nope"), {"data": {}}, format="json").status_code == 404
    for body in ({}, {"data": [1]}, {"data": "x"}):
        response = client.post(url, body, format="json")
        assert response.status_code == 400 and "data" in response.json()["errors"], (body, response.content)
    assert client.post(url, [1], format="json").status_code == 400
    bad_version = client.patch(url + f"{entity['id']}/", {"data": {"n": 2}}, format="json", HTTP_IF_MATCH="abc")
    assert bad_version.status_code == 400 and "If-Match" in bad_version.json()["errors"]
    bad_version = client.patch(url + f"{entity['id']}/", {"data": {"n": 2}, "version": "1"}, format="json")
    assert bad_version.status_code == 400 and "version" in bad_version.json()["errors"]
    put = client.put(url + f"{entity['id']}/", {"data": {"n": 2}}, format="json", HTTP_IF_MATCH='W/"1"')
    assert put.status_code == 200 and put.json()["data"] == {"n": 2} and put.json()["version"] == 2  # replaced, not merged
    assert client.get(url, {"limit": 0}).status_code == 400

    # apps
    app = {"id": "desk", "name": "Desk", "pages": [{"path": "", "components": [
        {"type": "table", "binding": {"collection": "members", "fields": ["n"]}}]}]}
    made = client.post("/api/apps/", app, format="json")
    assert made.status_code == 201 and made.json()["url"] == "/apps/acme/desk/", made.content
    assert client.post("/api/apps/", app, format="json").status_code == 409
    assert [a["id"] for a in client.get("/api/apps/").json()["results"]] == ["desk"]
    assert client.get("/api/apps/desk/").json()["pages"][0]["title"] == "Desk"
    assert client.patch("/api/apps/desk/", {"public": True}, format="json").json()["public"] is True
    moved = client.patch("/api/apps/desk/", {"id": "other"}, format="json")
    assert moved.status_code == 400 and "id" in moved.json()["errors"]
    replaced = client.put("/api/apps/desk/", {"name": "Desk 2", "pages": app["pages"]}, format="json")
    assert replaced.status_code == 200 and replaced.json()["public"] is False and replaced.json()["name"] == "Desk 2"
    assert client.delete("/api/collections/members/").status_code == 409  # the app still shows it
    assert client.delete("/api/apps/desk/").status_code == 204
    assert client.get("/api/apps/desk/").status_code == 404
    assert client.delete("/api/collections/members/").status_code == 204
    assert client.get(url + f"{entity['id']}/").status_code == 404
    assert not Entity.objects.for_tenant(acme.tenant).exists()  # the collection's entities went with it


@pytest.mark.parametrize("sort", ["done", "-done", "label", "-label,done"])
def test_pages_over_booleans_and_strings_skip_nothing(acme, sort):
    services.collection_create(tenant=acme.tenant, actor=acme.actor, document={"name": "tasks"})
    client = acme.client()
    for i in range(12):
        data = {"label": "abcd"[i % 4] * (1 + i % 3)}
        if i % 5:
            data["done"] = bool(i % 2)
        create(client, "tasks", data)
    full = listing(client, "tasks", sort=sort)["results"]
    assert len(full) == 12
    field = sort.split(",")[0].lstrip("-")
    values = [e["data"].get(field) for e in full]
    present = [v for v in values if v is not None]
    assert values[: len(present)] == present, f"missing values sort last: {values}"
    assert present == sorted(present, reverse=sort.startswith("-")), values
    for limit in (1, 5):
        seen, _ = walk(client, "tasks", limit, sort=sort)
        assert [e["id"] for e in seen] == [e["id"] for e in full], (sort, limit)
