"""Small shapes every service write shares."""

from contextlib import contextmanager

from django.db import IntegrityError, transaction

from backflow.errors import Conflict, InvalidInput


@contextmanager
def unique(what, field, value):
    """One transaction; a unique-constraint clash inside it becomes a 409 naming `field`."""
    try:
        with transaction.atomic():
            yield
    except IntegrityError as exc:
        raise Conflict(f"{what} {value!r} already exists.", {field: [f"{value!r} is taken; pick another or change the existing one."]}) from exc


def check_changes(changes, *, field, identity, refusal):
    """Changes are a JSON object that leaves the identifying field as it is (else `refusal`)."""
    if not isinstance(changes, dict):
        raise InvalidInput.single("body", "Send a JSON object.")
    if changes.get(field, identity) != identity:
        raise InvalidInput.single(field, refusal)
