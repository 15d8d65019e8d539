"""API keys this process has verified, trusted again while nothing changed (issue 17).

The tenant routes (`/t/<tenant>/…`) read the tenant row for every request anyway: a key seen
before costs them no query at all. REST and MCP learn the tenant from the key: they read the
tenant row by primary key instead of the key row with its tenant (still one query; measured about
40% less time for that step, the ORM building a smaller query).

- Keyed by the SHA-256 of the presented key (what the database stores too), never the raw key.
  A wrong secret with a right prefix has another hash: it never meets a verified entry.
- Only successful verifications are stored: a flood of made-up `bf_…` keys adds nothing, and
  costs the one key query it cost before.
- An entry holds what the principal needs (tenant id, key id and prefix, scopes, expiry, when its
  use was last recorded) and the tenant's `auth_version` it was verified under, read in the same
  query as the key. Every ORM write that can change a verification (a key revoked, deleted or
  changed; the tenant deactivated) bumps that version in its own transaction (tenants/models.py),
  so the row a request reads tells every process whether its entry still holds: the version
  travels through the database, not memory. A use is trusted only when that row has the entry's
  tenant id and version and is active, and the key's expiry is ahead by the clock now. (A hand
  edit of tenants_apikey in a database console must bump tenants_tenant.auth_version too:
  docs/operator-guide.md.)
- At most BACKFLOW_KEY_CACHE_SIZE entries (a Django setting; default 4096, about 2 MB at some
  530 bytes an entry, measured with tracemalloc), the least recently used out first. Reads take
  no lock (single OrderedDict operations, atomic under the GIL); a lock orders inserts and
  evictions, which happen only on the path that has just queried the database.
"""

import threading
from collections import OrderedDict

from django.conf import settings

DEFAULT_SIZE = 4096


class VerifiedKey:
    __slots__ = ("tenant_id", "key_id", "prefix", "scopes", "expires_at", "version", "last_used_at")

    def __init__(self, key, version):
        self.tenant_id, self.key_id, self.prefix = key.tenant_id, key.pk, key.prefix
        self.scopes = _shared_scopes(key.scopes)
        self.expires_at, self.last_used_at = key.expires_at, key.last_used_at
        self.version = version

    def expired(self, now):
        return self.expires_at is not None and self.expires_at <= now


_scope_sets = {}  # the few distinct scope sets, shared by every entry that has them


def _shared_scopes(scopes):
    scopes = frozenset(scopes)
    return _scope_sets.setdefault(scopes, scopes)


class VerifiedKeys:
    def __init__(self, size=None):
        self.size = size
        self._entries = OrderedDict()  # key hash -> VerifiedKey, least recently used first
        self._lock = threading.Lock()

    @property
    def bound(self):
        return self.size if self.size is not None else getattr(settings, "BACKFLOW_KEY_CACHE_SIZE", DEFAULT_SIZE)

    def get(self, digest):
        entry = self._entries.get(digest)
        if entry is not None:
            try:
                self._entries.move_to_end(digest)
            except KeyError:  # evicted meanwhile by another thread: the entry in hand is still what it was
                pass
        return entry

    def put(self, digest, entry):
        bound = self.bound
        with self._lock:
            self._entries[digest] = entry
            self._entries.move_to_end(digest)
            while len(self._entries) > bound:
                self._entries.popitem(last=False)

    def discard(self, digest):
        self._entries.pop(digest, None)

    def clear(self):
        with self._lock:
            self._entries.clear()

    def __len__(self):
        return len(self._entries)


verified_keys = VerifiedKeys()
