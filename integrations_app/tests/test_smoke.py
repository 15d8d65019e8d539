AIRTABLE = {
    "name": "airtable",
    "displayName": "Airtable",
    "description": "Airtable API integration",
    "baseUrl": "https://api.airtable.com/v0",
    "auth": {"type": "bearer", "secret": "airtable_token"},
    "endpoints": [
        {"name": "listRecords", "method": "GET", "path": "/{baseId}/{table}"},
        {"name": "createRecord", "method": "post", "path": "/{baseId}/{table}", "body": {"fields": "{{params.fields}}"}},
    ],
}


def test_crud_smoke(acme):
    c = acme.client()
    r = c.post("/api/integrations/", AIRTABLE, format="json")
    assert r.status_code == 201, r.json()
    assert r.json()["endpoints"][0]["method"] == "get"
    r = c.post("/api/integrations/", AIRTABLE, format="json")
    assert r.status_code == 409, r.json()
    r = c.post("/api/routes/", {"path": "/records/{id}", "method": "GET", "integrations": {"actions": [
        {"integration": "airtable", "action": "listRecords", "params": {"id": "{{request.params.id}}"}}]}}, format="json")
    assert r.status_code == 201, r.json()
    rid = r.json()["id"]
    assert c.get("/api/routes/?method=GET").json()["count"] == 1
    assert c.delete("/api/integrations/airtable/").status_code == 409
    assert c.patch(f"/api/routes/{rid}/", {"description": "x"}, format="json").json()["description"] == "x"
    assert c.delete(f"/api/routes/{rid}/").status_code == 204
    assert c.delete("/api/integrations/airtable/").status_code == 204
    r = c.get("/api/audit/")
    assert r.status_code == 200 and r.json()["count"] >= 5, r.json()
