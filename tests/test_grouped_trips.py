"""backflow.sync.GroupedTrips: callers of one owner that come while its thread slots are taken share
the next trip to a thread, and that trip starts after every one of them arrived."""

import asyncio
import contextvars
import itertools
import threading

import pytest

from backflow import sync
from tests.shares import run_with_shares

pytestmark = pytest.mark.pool_threads


class Recorder:
    """`prepare` and `each` for GroupedTrips: record each trip (its items, and its place in the
    order of events beside the callers' arrivals); a trip whose first item is one of `hold` sets
    `started[item]` and waits for `release[item]` before it takes its items."""

    def __init__(self, hold=()):
        self.events = itertools.count()  # arrivals and trip starts, in order (next() is atomic in CPython)
        self.trips = []
        self.started = {name: threading.Event() for name in hold}
        self.release = {name: threading.Event() for name in hold}

    def arrival(self, name):
        return (name, next(self.events))

    def prepare(self, owner, items):
        first = items[0]
        trip = {"owner": owner, "start": next(self.events), "items": [], "arrivals": []}
        self.trips.append(trip)
        if first[0] in self.release:
            self.started[first[0]].set()
            assert self.release[first[0]].wait(10), "the test never released the trip"
        return trip

    @staticmethod
    def each(trip, item):
        name, arrived = item
        trip["items"].append(name)
        trip["arrivals"].append(arrived)
        if name.startswith("bad"):
            raise ValueError(f"{name} is refused")
        return name.upper()

    def trips_of(self, limit=10):
        return sync.GroupedTrips(self.each, limit, prepare=self.prepare)


async def wait_until(event):
    for _ in range(500):
        if event.is_set():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the trip never started")


@pytest.fixture
def one_thread(settings):
    settings.BACKFLOW_SYNC_THREADS_PER_TENANT = 1  # an owner's callers wait while one of its trips runs


async def slot_taken(trips, func):
    """acme's caller "first", once its trip holds acme's only slot (until func.release["first"])."""
    first = asyncio.create_task(trips("acme", func.arrival("first")))
    await wait_until(func.started["first"])
    return first


async def until_waiting(trips, owner, count):
    """Until `count` callers of `owner` wait for the next trip."""
    for _ in range(500):
        group = trips._open.get((id(asyncio.get_running_loop()), owner))
        if group is not None and len(group.calls) == count:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{count} callers never gathered")


def test_callers_waiting_for_a_slot_share_one_trip_and_other_owners_do_not_wait(one_thread):
    func = Recorder(hold={"first"})
    trips = func.trips_of()

    async def main():
        first = asyncio.create_task(trips("acme", func.arrival("first")))
        await wait_until(func.started["first"])  # acme's only slot is taken
        waiting = [asyncio.create_task(trips("acme", func.arrival(name))) for name in ("b", "c", "d")]
        other = await trips("globex", func.arrival("x"))  # another owner: a trip at once
        func.release["first"].set()
        return await first, [await task for task in waiting], other

    (first, waiting, other), shares = run_with_shares(main())
    assert (first, waiting, other) == ("FIRST", ["B", "C", "D"], "X")
    assert [(trip["owner"], trip["items"]) for trip in func.trips] == [
        ("acme", ["first"]), ("globex", ["x"]), ("acme", ["b", "c", "d"])]
    assert not trips._open and not trips._running and not shares  # nothing kept once all are answered


def test_a_trip_starts_after_every_one_of_its_callers_arrived(one_thread):
    """What a trip reads (the tenant row: a revoked key, a new route) is never older than any of
    its callers: a caller that comes once a trip has its slot waits for the next one."""
    func = Recorder(hold={"first", "second"})
    trips = func.trips_of()

    async def main():
        first = await slot_taken(trips, func)
        second = asyncio.create_task(trips("acme", func.arrival("second")))
        await until_waiting(trips, "acme", 1)
        func.release["first"].set()  # the first trip ends; the second gets the slot and starts, and is held
        await first
        await wait_until(func.started["second"])
        late = asyncio.create_task(trips("acme", func.arrival("late")))  # while the second trip runs
        await until_waiting(trips, "acme", 1)
        func.release["second"].set()
        return await second, await late

    assert asyncio.run(main()) == ("SECOND", "LATE")
    assert [trip["items"] for trip in func.trips] == [["first"], ["second"], ["late"]]
    for trip in func.trips:
        assert max(trip["arrivals"]) < trip["start"], trip


def test_each_caller_gets_its_own_result_or_failure(one_thread):
    func = Recorder(hold={"first"})
    trips = func.trips_of()

    async def main():
        first = await slot_taken(trips, func)
        together = [asyncio.create_task(trips("acme", func.arrival(name))) for name in ("good", "bad-key", "fine")]
        await until_waiting(trips, "acme", 3)
        func.release["first"].set()
        await first
        return await asyncio.gather(*together, return_exceptions=True)

    good, bad, fine = asyncio.run(main())
    assert (good, fine) == ("GOOD", "FINE")
    assert isinstance(bad, ValueError) and str(bad) == "bad-key is refused"
    assert [trip["items"] for trip in func.trips] == [["first"], ["good", "bad-key", "fine"]]


@pytest.mark.parametrize("step", ["prepare", "conclude"])
def test_a_trip_whose_shared_part_fails_fails_each_of_its_callers(step):
    def broken(*args):
        raise RuntimeError(f"{step} failed: the database is down")

    trips = sync.GroupedTrips(lambda shared, item: item, 10, **{step: broken})

    async def main():
        return await asyncio.gather(*(trips("acme", name) for name in "abc"), return_exceptions=True)

    results, shares = run_with_shares(main())
    assert [str(result) for result in results] == [f"{step} failed: the database is down"] * 3
    assert not trips._open and not shares


def test_a_trip_concludes_once_after_its_last_item_and_before_any_answer(one_thread):
    """What the items leave for the end (their audit rows, inserted together) is done once per trip,
    after every item ran and before any of its callers has its answer."""
    func = Recorder(hold={"first"})
    concluded = []
    trips = sync.GroupedTrips(func.each, 10, prepare=func.prepare, conclude=lambda trip: concluded.append(list(trip["items"])))

    async def main():
        first = await slot_taken(trips, func)
        together = [asyncio.create_task(trips("acme", func.arrival(name))) for name in ("a", "bad-b", "c")]
        await until_waiting(trips, "acme", 3)
        func.release["first"].set()
        answers = [await first]
        for task in asyncio.as_completed(together):
            try:
                answers.append(await task)
            except ValueError as exc:
                answers.append(str(exc))
            answers.append(list(concluded))  # what had been concluded when this caller got its answer
        return answers

    answers = asyncio.run(main())
    assert concluded == [["first"], ["a", "bad-b", "c"]]
    assert answers[0] == "FIRST" and answers[2::2] == [concluded] * 3, answers


def test_each_item_runs_in_its_callers_context(one_thread):
    """The request id of log lines and audit rows is each caller's own, in a shared trip too."""
    request_id = contextvars.ContextVar("request_id", default=None)
    release = threading.Event()
    trips = sync.GroupedTrips(lambda shared, item: (item, request_id.get()), 10,
                              prepare=lambda owner, items: release.wait(10) if items == ["first"] else None)

    async def call(item):
        request_id.set(f"request-{item}")
        return await trips("acme", item)

    async def main():
        first = asyncio.create_task(call("first"))
        await asyncio.sleep(0.05)
        together = [asyncio.create_task(call(item)) for item in ("a", "b", "c")]
        await until_waiting(trips, "acme", 3)
        release.set()
        return [await first, *[await task for task in together]]

    assert asyncio.run(main()) == [(item, f"request-{item}") for item in ("first", "a", "b", "c")]


def test_a_trip_takes_at_most_its_limit(one_thread):
    func = Recorder(hold={"first"})
    trips = func.trips_of(limit=3)

    async def main():
        first = await slot_taken(trips, func)
        rest = [asyncio.create_task(trips("acme", func.arrival(f"n{index}"))) for index in range(7)]
        await until_waiting(trips, "acme", 1)  # the third group has its one caller
        func.release["first"].set()
        await first
        return await asyncio.gather(*rest)

    assert asyncio.run(main()) == [f"N{index}" for index in range(7)]
    assert [trip["items"] for trip in func.trips] == [["first"], ["n0", "n1", "n2"], ["n3", "n4", "n5"], ["n6"]]


def cancelled_while_waiting(names, cancelled):
    """acme's callers `names` wait behind the trip of "first"; those in `cancelled` are cancelled
    before it ends. (The others' results by name once every trip is done, the Recorder.)"""
    func = Recorder(hold={"first"})
    trips = func.trips_of()

    async def main():
        first = await slot_taken(trips, func)
        tasks = {name: asyncio.create_task(trips("acme", func.arrival(name))) for name in names}
        await until_waiting(trips, "acme", len(names))
        for name in cancelled:
            tasks[name].cancel()
        func.release["first"].set()
        await first
        for name in cancelled:
            with pytest.raises(asyncio.CancelledError):
                await tasks[name]
        results = {name: await task for name, task in tasks.items() if name not in cancelled}
        for _ in range(500):
            if not trips._running:
                return results
            await asyncio.sleep(0.01)
        raise AssertionError("a trip never ended")

    results, shares = run_with_shares(main())
    assert not trips._open and not trips._running and not shares
    return results, func


def test_a_caller_cancelled_before_its_trip_is_not_run_and_leaves_the_trip_to_the_others(one_thread):
    results, func = cancelled_while_waiting(["gone", "stays"], cancelled=["gone"])
    assert results == {"stays": "STAYS"}
    assert [trip["items"] for trip in func.trips] == [["first"], ["stays"]]


def test_a_trip_whose_callers_were_all_cancelled_does_not_go(one_thread):
    results, func = cancelled_while_waiting(["lone"], cancelled=["lone"])
    assert results == {}
    assert [trip["items"] for trip in func.trips] == [["first"]]
