"""The entity filter language on the ORM, with stable keyset cursors (SQLite and Postgres).

Order is the requested sort plus the id as a tie-breaker; missing values (and JSON null) sort
last. A cursor is the signed position after the last item of a page, so inserts between pages
neither repeat nor skip items, and a forged or foreign cursor is refused.

A field name never goes through Django's lookup parser: `data__<field>` would read
`{"name__regex": …}` as a regex lookup (and `{"regex": …}` as one on the whole document), so a
field is always one explicit KeyTransform, and every JSON path below is built with json.dumps.
documents.check_filters refuses such names anyway (issue 14).
"""

import json
from datetime import UTC

from django.core import signing
from django.db import connection
from django.db.models import BooleanField, F, JSONField, Q
from django.db.models.expressions import RawSQL
from django.db.models.fields.json import KeyTransform
from django.utils.dateparse import parse_datetime

from backflow.errors import InvalidInput
from entities_app.documents import MAX_LIMIT, OPERATORS, TIMESTAMP_FIELDS
from entities_app.models import Entity

CURSOR_SALT = "backflow.entities.cursor"
TABLE = "entities_app_entity"
_DATA_COLUMN = Entity._meta.get_field("data").cached_col


def _json_path(field):
    """SQLite JSON path of a top-level key, quoted: `$."name"`."""
    return "$." + json.dumps(field)


def _key(field):
    """The data field `field` as an expression: data -> 'field', whatever the name holds."""
    return KeyTransform(field, _DATA_COLUMN)


def _lookup(field, op, value):
    """`data -> field <op> value` with Django's JSON key lookups (exact, in, gt, icontains, ...),
    never parsed from a string: the same SQL as filter(data__<field>__<op>=value)."""
    key = _key(field)
    return key.get_lookup(op)(key, value)


def _timestamp(field, value):
    try:
        moment = parse_datetime(value) if isinstance(value, str) else None
        # In UTC: PostgreSQL refuses UTC offsets beyond ±15:59, which ISO 8601 allows.
        moment = moment.astimezone(UTC) if moment is not None and moment.tzinfo else moment
    except (ValueError, OverflowError):  # well formed but impossible (month 13), or before year 1 in UTC
        moment = None
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
        path = _json_path(field)
        sql = (f"((json_type(\"{TABLE}\".\"data\", %s) = 'array' AND EXISTS (SELECT 1 FROM json_each(\"{TABLE}\".\"data\", %s) AS e "
               f"WHERE e.value = %s)) OR (json_type(\"{TABLE}\".\"data\", %s) = 'text' AND instr(json_extract(\"{TABLE}\".\"data\", %s), %s) > 0))")
        scalar = value if isinstance(value, (int, float, str)) and not isinstance(value, bool) else json.dumps(value)
        params = [path, path, scalar, path, path, str(value)]
    return RawSQL(sql, params, output_field=BooleanField())


def _equals(field, value):
    if field in TIMESTAMP_FIELDS:
        return Q(**{TIMESTAMP_FIELDS[field]: _timestamp(field, value)})
    if connection.vendor == "postgresql" and isinstance(value, (str, int, float, bool)):
        # Served by the GIN index. Only for scalars: for an object or a list `@>` means "contains",
        # not "equals" (the lookup below is exact on both databases).
        return Q(data__contains={field: value})
    return Q(_lookup(field, "exact", value))


COMPARISONS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def _compare_same_type(field, op, value):
    """gt/gte/lt/lte on a data field, matching only values of the operand's JSON type (numbers with
    numbers, strings with strings), so null, true or "cheap" never count as less than 10."""
    if connection.vendor == "postgresql":
        # One CASE clause rather than `jsonb_typeof(...) = 'number' AND ...`: Postgres guesses 0.5%
        # for an equality on an expression without statistics, and that underestimate made it sort
        # every match instead of walking the (collection, created_at, id) index for a page.
        kind = "string" if isinstance(value, str) else "number"
        sql = (f'(CASE WHEN jsonb_typeof("{TABLE}"."data" -> %s) = %s '
               f'THEN "{TABLE}"."data" -> %s {COMPARISONS[op]} %s::jsonb END)')
        return RawSQL(sql, [field, kind, field, json.dumps(value)], output_field=BooleanField())
    kinds = ("text",) if isinstance(value, str) else ("integer", "real")
    same_type = RawSQL(f'json_type("{TABLE}"."data", %s) IN ({", ".join("%s" for _ in kinds)})',
                       [_json_path(field), *kinds], output_field=BooleanField())
    return Q(same_type) & Q(_lookup(field, op, value))


def apply_filters(queryset, filters):
    for field, condition in (filters or {}).items():
        conditions = condition if isinstance(condition, dict) else {"eq": condition}
        for op, value in conditions.items():
            queryset = _apply(queryset, field, op, value)
    return queryset


def _apply(queryset, field, op, value):
    if op not in OPERATORS:  # check_filters refused it already; never hand Django a lookup name of ours
        raise InvalidInput.single(f"filters.{field}.{op}", "unknown operator.")
    timestamp = TIMESTAMP_FIELDS.get(field)
    if timestamp and op in ("gt", "gte", "lt", "lte"):
        value = _timestamp(field, value)
    if op == "eq":
        return queryset.filter(_equals(field, value))
    if op == "ne":
        if timestamp:  # always set: no "missing" case to include
            return queryset.exclude(_equals(field, value))
        return queryset.filter(~_equals(field, value) | ~Q(data__has_key=field))
    if op in ("gt", "gte", "lt", "lte"):
        if timestamp:
            return queryset.filter(**{f"{timestamp}__{op}": value})
        return queryset.filter(_compare_same_type(field, op, value))
    if op == "in":
        if timestamp:
            return queryset.filter(**{f"{timestamp}__in": [_timestamp(field, v) for v in value]})
        return queryset.filter(_lookup(field, "in", value))
    if op == "exists":
        if timestamp:  # every entity has both timestamps
            return queryset if value else queryset.none()
        return queryset.filter(data__has_key=field) if value else queryset.exclude(data__has_key=field)
    if op == "icontains":
        if timestamp:
            return queryset.filter(**{f"{timestamp}__icontains": value})
        return queryset.filter(_lookup(field, "icontains", value))
    if op == "contains":
        return queryset.filter(_contains(field, value))
    raise InvalidInput.single(f"filters.{field}.{op}", "unknown operator.")


def _value_sql(field):
    """A data field's value as sorted and compared by cursors: SQL NULL when missing or JSON null."""
    if connection.vendor == "postgresql":
        return f'NULLIF("{TABLE}"."data" -> %s, \'null\'::jsonb)', [field]
    return f'json_extract("{TABLE}"."data", %s)', [_json_path(field)]


def _expression(field):
    if field in TIMESTAMP_FIELDS:
        return F(TIMESTAMP_FIELDS[field])
    sql, params = _value_sql(field)
    return RawSQL(sql, params, output_field=JSONField())


def _compare(field, operator, value):
    """Q for `<data field> <operator> value`, or `IS NULL` for value None, on the sort expression."""
    sql, params = _value_sql(field)
    if value is None:
        return Q(RawSQL(f"{sql} IS NULL", params, output_field=BooleanField()))
    if connection.vendor == "postgresql":
        sql, params = f"{sql} {operator} %s::jsonb", [*params, json.dumps(value)]
    else:
        param = json.dumps(value, separators=(",", ":")) if isinstance(value, (dict, list)) else value
        sql, params = f"{sql} {operator} %s", [*params, param]
    return Q(RawSQL(sql, params, output_field=BooleanField()))


def order(queryset, sort):
    keys = []
    for field, desc in sort:
        expression = _expression(field)
        if field in TIMESTAMP_FIELDS:  # never null: a plain ORDER BY lets the (collection, timestamp, id) indexes serve it
            keys.append(expression.desc() if desc else expression.asc())
        else:
            keys.append(expression.desc(nulls_last=True) if desc else expression.asc(nulls_last=True))
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
        if field in TIMESTAMP_FIELDS:
            column, value = TIMESTAMP_FIELDS[field], parse_datetime(value)
            later, same = Q(**{f"{column}__{'lt' if desc else 'gt'}": value}), Q(**{column: value})
        elif value is None:  # a missing (or null) value: only other missing values follow it
            equal_so_far &= _compare(field, "IS", None)
            continue
        else:  # missing values sort last
            later = _compare(field, "<" if desc else ">", value) | _compare(field, "IS", None)
            same = _compare(field, "=", value)
        branches.append(equal_so_far & later)
        equal_so_far &= same
    condition = equal_so_far & Q(id__gt=last_id)
    for branch in branches:
        condition |= branch
    field, desc = sort[0]
    if field in TIMESTAMP_FIELDS:
        # Implied by the condition, but a plain range the database can start an index scan at
        # (the OR above is only a filter): a deep page then reads no more rows than the first.
        column = TIMESTAMP_FIELDS[field]
        condition &= Q(**{f"{column}__{'lte' if desc else 'gte'}": parse_datetime(values[0])})
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
