"""Request ids made here (no trusted proxy's): 32 hex digits, time-ordered then random, so that the
indexes on request_id take new rows together (backflow.logs.new_request_id)."""

import re

from backflow import logs

START_NS = 1_765_000_000_000 * 1_000_000  # a time in ms, as nanoseconds


def test_ids_sort_by_the_time_they_were_made(monkeypatch):
    clock = iter(range(START_NS, START_NS + 200 * 1_000_000, 1_000_000))  # one id a millisecond
    monkeypatch.setattr(logs.time, "time_ns", lambda: next(clock))
    made = [logs.new_request_id() for _ in range(200)]
    assert made == sorted(made)
    assert made[0].startswith(f"{START_NS // 1_000_000:012x}")


def test_ids_are_32_hex_digits_and_random_within_a_millisecond(monkeypatch):
    monkeypatch.setattr(logs.time, "time_ns", lambda: START_NS)
    made = {logs.new_request_id() for _ in range(1000)}
    assert len(made) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{32}", request_id) for request_id in made)
