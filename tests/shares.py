"""The owners' thread shares (backflow.sync) one event loop keeps, for tests that check nothing is
left once its work ended: another test's loop in the same process (a live server's, one not yet
collected) may hold shares of its own at that moment."""

import asyncio

from backflow import sync


def run_with_shares(coro):
    """(asyncio.run(coro)'s result, the shares its loop still keeps when `coro` has returned)."""
    with asyncio.Runner() as runner:
        result = runner.run(coro)
        return result, dict(sync._shares.get(runner.get_loop(), {}))
