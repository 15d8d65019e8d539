"""Per-owner bounds inside one process: how many of something (route calls in flight, open SSE
streams) one tenant or principal holds at once. Touched from one event loop only; no lock."""

import contextlib


class Full(Exception):
    def __init__(self, held):
        super().__init__(held)
        self.held = held


class Slots:
    def __init__(self):
        self._held = {}  # owner -> slots held now; an owner holding none is forgotten

    @contextlib.contextmanager
    def take(self, owner, limit):
        """Hold one of `owner`'s `limit` slots for the block, or raise Full(held)."""
        held = self._held.get(owner, 0)
        if held >= limit:
            raise Full(held)
        self._held[owner] = held + 1
        try:
            yield
        finally:
            self.release(owner)

    def add(self, owner):
        """Count one more for `owner`, with no limit (a hot path's counter, without a context
        manager's cost); the count before it. Each add is paired with a release."""
        held = self._held.get(owner, 0)
        self._held[owner] = held + 1
        return held

    def release(self, owner):
        if self._held[owner] <= 1:
            del self._held[owner]
        else:
            self._held[owner] -= 1

    def held(self, owner):
        return self._held.get(owner, 0)
