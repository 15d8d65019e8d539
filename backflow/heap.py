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
"""

import gc


def freeze_startup_objects():
    """Collect what start-up left as garbage, then take every object alive now out of the
    collector's view. Call once, when the process has loaded what it serves with and before it
    serves."""
    gc.collect()
    gc.freeze()
