"""Newest-first keyset pages over a tenant's history (route invocations, workflow runs).

A cursor is the signed (created_at, id) of the last row of a page: rows written between two pages
neither repeat nor skip anything, and a forged or edited cursor is refused.
"""

from django.core import signing
from django.db.models import Q
from django.utils.dateparse import parse_datetime

from backflow.errors import InvalidInput

MAX_LIMIT = 100


def newest_first(queryset, *, limit, cursor, salt):
    """(rows, next cursor or None) of `queryset` (which has created_at), newest first."""
    if cursor:
        try:
            position = signing.loads(cursor, salt=salt)
            moment, last_id = parse_datetime(position["t"]), position["id"]
        except (signing.BadSignature, KeyError, TypeError, ValueError) as exc:
            raise InvalidInput.single("cursor", "give nextCursor from the previous page, unchanged.") from exc
        queryset = queryset.filter(Q(created_at__lt=moment) | Q(created_at=moment, pk__lt=last_id))
    rows = list(queryset.order_by("-created_at", "-pk")[:limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = signing.dumps({"t": rows[-1].created_at.isoformat(), "id": str(rows[-1].pk)}, salt=salt) if more else None
    return rows, next_cursor
