"""Values derived from a setting, kept while the setting is the same object.

A hot path that would derive the same thing from a setting on every request (the Host values
ALLOWED_HOSTS allows, the cache backend CACHES names) reads the setting — one attribute — and gets
what was derived from it; a setting replaced (override_settings, pytest-django's `settings`) gets
its own.
"""

from django.conf import settings

_NOTHING = object()


class PerSetting:
    """`derived.get()`: `make(setting)` of the setting `name`, made again only when the setting
    is another object than the one it was made from."""

    def __init__(self, name, make):
        self._name, self._make = name, make
        self._made = (_NOTHING, None)  # (the setting, what was made from it): replaced whole, never half

    def get(self):
        setting = getattr(settings, self._name)
        made_from, value = self._made
        if made_from is not setting:
            value = self._make(setting)
            self._made = (setting, value)
        return value
