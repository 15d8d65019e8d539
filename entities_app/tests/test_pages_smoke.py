from django.test import Client

from entities_app import services


def test_member_sees_table_and_submits_form(acme, globex):
    services.collection_create(tenant=acme.tenant, actor=acme.actor, document={"name": "members", "schema": {
        "type": "object", "properties": {"name": {"type": "string", "minLength": 2}, "age": {"type": "integer"}}, "required": ["name"]}})
    services.entity_create(tenant=acme.tenant, actor=acme.actor, collection_name="members", data={"name": "Ana", "age": 30})
    services.app_create(tenant=acme.tenant, actor=acme.actor, document={"id": "studio", "name": "Studio", "pages": [
        {"path": "", "title": "Members", "components": [
            {"type": "markdown", "props": {"text": "# Hi <script>alert(1)</script>"}},
            {"type": "table", "binding": {"collection": "members", "fields": ["name", "age"]}},
            {"type": "form", "binding": {"collection": "members", "fields": ["name", "age"]}},
            {"type": "stat", "props": {"label": "ages", "op": "sum", "field": "age"}, "binding": {"collection": "members"}},
        ]}]})
    anonymous = Client()
    assert anonymous.get("/apps/acme/studio/").status_code == 302
    member = Client()
    member.force_login(acme.owner)
    page = member.get("/apps/acme/studio/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<td>Ana</td>" in html and "&lt;script&gt;" in html and "<script>alert" not in html
    bad = member.post("/apps/acme/studio/", {"_component": "2", "name": "A", "age": "x"})
    assert bad.status_code == 400 and 'data-field="age"' in bad.content.decode()
    bad = member.post("/apps/acme/studio/", {"_component": "2", "name": "A", "age": "3"})
    assert bad.status_code == 400 and 'data-field="name"' in bad.content.decode(), bad.content.decode()
    ok = member.post("/apps/acme/studio/", {"_component": "2", "name": "Ben", "age": "41"})
    assert ok.status_code == 302
    assert "<td>Ben</td>" in member.get(ok["Location"]).content.decode()
    assert ">71<" in member.get("/apps/acme/studio/").content.decode()
    other = Client()
    other.force_login(globex.owner)
    assert other.get("/apps/acme/studio/").status_code == 404
    assert member.get("/apps/acme/nope/").status_code == 404
