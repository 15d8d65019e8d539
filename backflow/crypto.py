"""Encryption of stored credentials (Fernet, key from BACKFLOW_SECRETS_KEY).

Only this module sees plaintext secret values; they are decrypted at call time and never logged.
"""

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@lru_cache(maxsize=1)
def _fernet():
    # Several comma-separated keys allow rotation: the first encrypts, all decrypt.
    keys = [k.strip() for k in settings.BACKFLOW_SECRETS_KEY.split(",") if k.strip()]
    try:
        return MultiFernet([Fernet(k) for k in keys])
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(
            "BACKFLOW_SECRETS_KEY must be one or more comma-separated Fernet keys (32 url-safe base64 bytes)."
        ) from exc


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise ImproperlyConfigured("A stored secret cannot be decrypted with BACKFLOW_SECRETS_KEY.") from exc
