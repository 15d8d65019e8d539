"""The garbage collector and the objects a process makes at start-up.

Loading Django, DRF, the MCP SDK, pydantic's models and aiohttp leaves about 200,000 objects that
live as long as the process. CPython's collector examines every one of them in each full (oldest
generation) collection, about 100 ms of CPU on this project's 2-CPU machine, and a busy server ran
one every 1,500 requests or so: about 70 us of CPU per routed request, a sixth of what our own code
costs on the event loop (measured in process with `gc.callbacks`). Frozen (`gc.freeze()`), they
stay where they are and are no longer examined: a full collection then costs about 2 ms. The ASGI
servers (daphne, uvicorn) freeze them once backflow.asgi is loaded; the workflow worker and
`mcp_stdio` showed no difference (bench/load_workflows.py, bench/mcp_stdio.py) and do not.

Freeing is unchanged for them (by reference count); a frozen object that later becomes part of an
unreachable cycle is never reclaimed, which is why only what exists once start-up is over is frozen.

The servers then collect the youngest generation after YOUNG_THRESHOLD new objects instead of
CPython's 700. A busy server holds tens of thousands of young objects that are alive (the state of
the requests in flight), and every collection examined them again only to promote them: daphne
answering a route at 50 clients spent about 58 us of CPU a request in the collector (2,176 young,
197 middle and 17 full collections over 13,000 requests, timed with `gc.callbacks`); collecting
after 10,000 new objects, 14 us (65 and 5, none full), each collection about 3 ms. Memory is the
same (RSS 160 MiB in process either way): cycles wait a little longer to be reclaimed, while most
objects are freed by their reference count as before.
"""

import gc

YOUNG_THRESHOLD = 10_000


def freeze_startup_objects():
    """Collect what start-up left as garbage, then take every object alive now out of the
    collector's view, and collect young objects less often (YOUNG_THRESHOLD). Call once, when
    the process has loaded what it serves with and before it serves."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
