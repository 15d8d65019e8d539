"""Writes for collections, entities and apps: validate, write, audit."""

import json
import uuid

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.text import slugify

from backflow import tenant_schemas
from backflow.errors import Conflict, InvalidInput
from backflow.validation import field_path, nul_errors
from backflow.writes import check_changes, unique
from entities_app import selectors
from entities_app.documents import clean_app, clean_collection
from entities_app.models import App, Collection, Entity
from tenants.services import audit_record


def _audit(tenant, actor, action, object_type, object_id, summary):
    audit_record(tenant=tenant, actor=actor, action=action, object_type=object_type, object_id=object_id, summary=summary)


# -- collections --------------------------------------------------------------------------------

def collection_create(*, tenant, actor, document):
    doc = clean_collection(document)
    collection = Collection(tenant=tenant, name=doc["name"], description=doc["description"], schema=doc["schema"])
    with unique("A collection named", "name", doc["name"]):
        collection.save()
        _audit(tenant, actor, "collection.create", "collection", collection.name, {"name": collection.name, "hasSchema": collection.schema is not None})
    return collection


def collection_update(*, tenant, actor, name, changes, partial=True):
    """Change description or schema; a new schema must accept every stored entity."""
    check_changes(changes, field="name", identity=name, refusal="A collection cannot be renamed.")
    with transaction.atomic():
        collection = selectors.collection_get(tenant=tenant, name=name)
        current = {"name": name, "description": collection.description, "schema": collection.schema}
        doc = clean_collection({**current, **changes} if partial else {**changes, "name": name})
        if doc["schema"] is not None and doc["schema"] != collection.schema:
            _check_existing_entities(tenant, collection, doc["schema"])
        collection.description, collection.schema = doc["description"], doc["schema"]
        collection.save()
        _audit(tenant, actor, "collection.update", "collection", name, {"name": name, "hasSchema": collection.schema is not None})
    return collection


def _check_existing_entities(tenant, collection, schema):
    validator = tenant_schemas.validator_of(schema)
    rejected = []
    for entity in Entity.objects.for_tenant(tenant).filter(collection=collection).only("id", "data").iterator(chunk_size=2000):
        if not validator.is_valid(entity.data):
            rejected.append(str(entity.id))
            if len(rejected) >= 5:
                break
    if rejected:
        raise Conflict(
            f"Stored entities do not satisfy the new schema (e.g. {', '.join(rejected)}); fix them or loosen the schema.",
            {"schema": ["Existing entities would break it."]},
        )


def collection_delete(*, tenant, actor, name):
    with transaction.atomic():
        collection = selectors.collection_get(tenant=tenant, name=name)
        users = selectors.apps_binding(tenant=tenant, collection_name=name)
        if users:
            raise Conflict(f"Apps {', '.join(a.slug for a in users)} show collection {name!r}; change them first.",
                           {"name": ["Still bound by apps."]})
        Collection.objects.for_tenant(tenant).filter(pk=collection.pk).delete()
        _audit(tenant, actor, "collection.delete", "collection", name, {"name": name})


# -- entities -----------------------------------------------------------------------------------

def clean_entity_data(collection, data):
    if not isinstance(data, dict):
        raise InvalidInput.single("data", "Entity data is a JSON object.")
    if nul := nul_errors(data, ["data"]):
        raise InvalidInput("Invalid input.", nul)
    size = len(json.dumps(data))
    if size > settings.BACKFLOW_ENTITY_MAX_BYTES:
        raise InvalidInput.single("data", f"Entity data is {size} bytes; the limit is {settings.BACKFLOW_ENTITY_MAX_BYTES}.")
    if collection.schema is not None:
        errors = {}
        try:
            found = tenant_schemas.iter_errors(collection.schema, data)
        except tenant_schemas.UnusableSchema as exc:  # saved before the schema rules: say so, never a 500
            raise InvalidInput.single("data", str(exc)) from exc
        for error in found:
            parts = ["data", *error.absolute_path]
            if error.validator == "required":
                parts.append(error.message.split("'")[1])
            errors.setdefault(field_path(parts), []).append(error.message)
        if errors:
            raise InvalidInput(f"The data does not match collection {collection.name!r}'s schema.", errors)
    return data


def entity_create(*, tenant, actor, collection_name, data):
    collection = selectors.collection_get(tenant=tenant, name=collection_name)
    entity = Entity(tenant=tenant, collection=collection, data=clean_entity_data(collection, data))
    with transaction.atomic():
        entity.save()
        _audit(tenant, actor, "entity.create", "entity", entity.id, {"collection": collection.name})
    return entity


def entity_update(*, tenant, actor, collection_name, entity_id, data, partial=False, expected_version=None):
    """Replace (or with partial=True merge top-level keys into) an entity's data.

    With `expected_version`, the write only happens if nobody changed the entity since (409 otherwise).
    """
    if expected_version is not None and (not isinstance(expected_version, int) or isinstance(expected_version, bool)):
        raise InvalidInput.single("version", "give the version number you read.")
    collection = selectors.collection_get(tenant=tenant, name=collection_name)
    with transaction.atomic():
        current = selectors.entity_get(tenant=tenant, collection=collection, entity_id=entity_id)
        if not isinstance(data, dict):
            raise InvalidInput.single("data", "Entity data is a JSON object.")
        new_data = clean_entity_data(collection, {**current.data, **data} if partial else data)
        version = current.version if expected_version is None else expected_version
        updated = Entity.objects.for_tenant(tenant).filter(pk=current.pk, version=version).update(
            data=new_data, version=F("version") + 1, updated_at=timezone.now(),
        )
        if not updated:
            raise Conflict(f"Entity {entity_id} changed since version {version}; read it again and retry.",
                           {"version": [f"expected {version}, stored {current.version}"]})
        _audit(tenant, actor, "entity.update", "entity", current.id, {"collection": collection.name, "version": version + 1})
    return selectors.entity_get(tenant=tenant, collection=collection, entity_id=entity_id)


def entity_delete(*, tenant, actor, collection_name, entity_id, expected_version=None):
    collection = selectors.collection_get(tenant=tenant, name=collection_name)
    with transaction.atomic():
        entity = selectors.entity_get(tenant=tenant, collection=collection, entity_id=entity_id)
        if expected_version is not None and entity.version != expected_version:
            raise Conflict(f"Entity {entity_id} changed since version {expected_version}.", {"version": [f"stored {entity.version}"]})
        Entity.objects.for_tenant(tenant).filter(pk=entity.pk).delete()
        _audit(tenant, actor, "entity.delete", "entity", entity.id, {"collection": collection.name})


# -- apps ---------------------------------------------------------------------------------------

def _find_collection(tenant):
    return lambda name: Collection.objects.for_tenant(tenant).filter(name=name).first()


def _apply(app, doc):
    app.name, app.description, app.public, app.pages = doc["name"], doc["description"], doc["public"], doc["pages"]


def app_create(*, tenant, actor, document):
    doc = clean_app(document, find_collection=_find_collection(tenant))
    slug = doc.get("id") or slugify(doc["name"])[:63].strip("-_") or f"app-{uuid.uuid4().hex[:8]}"
    app = App(tenant=tenant, slug=slug)
    _apply(app, doc)
    with unique("An app with id", "id", slug):
        app.save()
        _audit(tenant, actor, "app.create", "app", slug, {"name": app.name, "pages": [p["path"] for p in app.pages]})
    return app


def app_update(*, tenant, actor, slug, changes, partial=True):
    check_changes(changes, field="id", identity=slug, refusal="An app's id cannot change; create a new app.")
    with transaction.atomic():
        app = selectors.app_get(tenant=tenant, slug=slug)
        current = {"id": slug, "name": app.name, "description": app.description, "public": app.public, "pages": app.pages}
        doc = clean_app({**current, **changes} if partial else {**changes, "id": slug}, find_collection=_find_collection(tenant))
        _apply(app, doc)
        app.save()
        _audit(tenant, actor, "app.update", "app", slug, {"name": app.name, "pages": [p["path"] for p in app.pages]})
    return app


def app_delete(*, tenant, actor, slug):
    with transaction.atomic():
        app = selectors.app_get(tenant=tenant, slug=slug)
        App.objects.for_tenant(tenant).filter(pk=app.pk).delete()
        _audit(tenant, actor, "app.delete", "app", slug, {"name": app.name})
