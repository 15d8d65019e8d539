"""The entity filter language on the ORM, with stable keyset cursors (SQLite and Postgres).

Order is the requested sort plus the id as a tie-breaker; missing values sort last. A cursor is
the signed position after the last item of a page, so inserts between pages neither repeat nor
skip items, and a forged or foreign cursor is refused.
"""

import json

from django.core import signing
from django.db import connection
from django.db.models import BooleanField, F, Q
from django.db.models.expressions import RawSQL
from django.db.models.fields.json import KeyTransform
from django.utils.dateparse import parse_datetime

from backflow.errors import InvalidInput
from entities_app.documents import MAX_LIMIT, TIMESTAMP_FIELDS

CURSOR_SALT = "backflow.entities.cursor"
TABLE = "entities_app_entity"


def _timestamp(field, value):
    moment = parse_datetime(value) if isinstance(value, str) else None
    if moment is None:
        raise InvalidInput.single(f"filters.{field}", "give an ISO 8601 date-time such as 2026-01-31T12:00:00Z.")
    return moment


def _contains(field, value):
    """Array fields: has the element; string fields: has the substring."""
    if connection.vendor == "postgresql":
        sql = (f'(("{TABLE}"."data" -> %s) @> %s::jsonb OR (jsonb_typeof("{TABLE}"."data" -> %s) = \'string\' '
               f'AND strpos("{TABLE}"."data" ->> %s, %s) > 0))')
        params = [field, json.dumps([value]), field, field, str(value)]
    else:
        path = f'$."{field}"'
        sql = (f"((json_type(\"{TABLE}\".\"data\", %s) = 'array' AND EXISTS (SELECT 1 FROM json_each(\"{TABLE}\".\"data\", %s) AS e "
               f"WHERE e.value = %s)) OR (json_type(\"{TABLE}\".\"data\", %s) = 'text' AND instr(json_extract(\"{TABLE}\".\"data\", %s), %s) > 0))")
        scalar = value if isinstance(value, (int, float, str)) and not isinstance(value, bool) else json.dumps(value)
        params = [path, path, scalar, path, path, str(value)]
    return RawSQL(sql, params, output_field=BooleanField())


def _equals(field, value):
    if field in TIMESTAMP_FIELDS:
        return Q(**{TIMESTAMP_FIELDS[field]: _timestamp(field, value)})
    if connection.vendor == "postgresql" and value is not None:
        return Q(data__contains={field: value})  # served by the GIN index
    return Q(**{f"data__{field}": value})


def apply_filters(queryset, filters):
    for field, condition in (filters or {}).items():
        conditions = condition if isinstance(condition, dict) else {"eq": condition}
        for op, value in conditions.items():
            queryset = _apply(queryset, field, op, value)
    return queryset


def _apply(queryset, field, op, value):
    column = TIMESTAMP_FIELDS.get(field) or f"data__{field}"
    if field in TIMESTAMP_FIELDS and op in ("gt", "gte", "lt", "lte"):
        value = _timestamp(field, value)
    if op == "eq":
        return queryset.filter(_equals(field, value))
    if op == "ne":
        return queryset.filter(~_equals(field, value) | ~Q(data__has_key=field))
    if op in ("gt", "gte", "lt", "lte"):
        return queryset.filter(**{f"{column}__{op}": value})
    if op == "in":
        return queryset.filter(**{f"{column}__in": value})
    if op == "exists":
        return queryset.filter(data__has_key=field) if value else queryset.exclude(data__has_key=field)
    if op == "icontains":
        return queryset.filter(**{f"{column}__icontains": value})
    if op == "contains":
        return queryset.filter(_contains(field, value))
    raise InvalidInput.single(f"filters.{field}.{op}", "unknown operator.")


def _expression(field):
    return F(TIMESTAMP_FIELDS[field]) if field in TIMESTAMP_FIELDS else KeyTransform(field, "data")


def _lookup(field):
    return TIMESTAMP_FIELDS.get(field) or f"data__{field}"


def order(queryset, sort):
    keys = [(_expression(f).desc(nulls_last=True) if desc else _expression(f).asc(nulls_last=True)) for f, desc in sort]
    return queryset.order_by(*keys, "id")


def _position(entity, sort):
    values = []
    for field, _ in sort:
        if field in TIMESTAMP_FIELDS:
            values.append(getattr(entity, TIMESTAMP_FIELDS[field]).isoformat())
        else:
            values.append(entity.data.get(field) if isinstance(entity.data, dict) else None)
    return values


def _query_key(sort, filters):
    return json.dumps([sort, filters], sort_keys=True, default=str)


def encode_cursor(entity, sort, filters):
    return signing.dumps({"v": _position(entity, sort), "id": str(entity.id), "q": _query_key(sort, filters)},
                         salt=CURSOR_SALT, compress=True)


def decode_cursor(cursor, sort, filters):
    try:
        data = signing.loads(cursor, salt=CURSOR_SALT)
    except signing.BadSignature as exc:
        raise InvalidInput.single("cursor", "not a cursor this server issued; use nextCursor from the previous page.") from exc
    if data.get("q") != _query_key(sort, filters):
        raise InvalidInput.single("cursor", "this cursor belongs to a query with other filters or sort.")
    return data["v"], data["id"]


def after(queryset, sort, values, last_id):
    """Rows strictly after the position (values, last_id) in `order(sort)`."""
    branches, equal_so_far = [], Q()
    for (field, desc), value in zip(sort, values):
        lookup = _lookup(field)
        if field in TIMESTAMP_FIELDS:
            value = parse_datetime(value)
        if value is None:  # a missing value: only other missing values follow it
            equal_so_far &= ~Q(data__has_key=field)
            continue
        later = Q(**{f"{lookup}__{'lt' if desc else 'gt'}": value})
        if field not in TIMESTAMP_FIELDS:
            later |= ~Q(data__has_key=field)  # missing values sort last
        branches.append(equal_so_far & later)
        equal_so_far &= Q(**{lookup: value})
    condition = equal_so_far & Q(id__gt=last_id)
    for branch in branches:
        condition |= branch
    return queryset.filter(condition)


def page(queryset, *, sort, filters, limit, cursor):
    """(entities, next_cursor or None)."""
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput.single("limit", f"give a whole number from 1 to {MAX_LIMIT}.")
    queryset = order(queryset, sort)
    if cursor:
        values, last_id = decode_cursor(cursor, sort, filters)
        queryset = after(queryset, sort, values, last_id)
    rows = list(queryset[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (encode_cursor(rows[-1], sort, filters) if more and rows else None)
