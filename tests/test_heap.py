"""A server process freezes what its start-up made (backflow.heap): the collector's full
collections stop re-examining Django, the SDKs and the project's own modules on every pass; and
its young objects are collected after 10,000 new ones, not CPython's 700."""

import subprocess
import sys

from tests.live import ROOT, child_env

# What the process has once daphne (or uvicorn) loaded the application: objects frozen, and what
# the collector's oldest generation still holds for it to examine at each full collection.
PROBE = "import gc, backflow.asgi; print(gc.get_freeze_count(), len(gc.get_objects(generation=2)), *gc.get_threshold())"


def test_loading_the_asgi_application_freezes_what_start_up_made(db):
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=child_env(DJANGO_SETTINGS_MODULE="backflow.settings"),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    frozen, oldest, *thresholds = map(int, done.stdout.split()[-5:])
    assert frozen > 100_000  # Django, DRF, the MCP SDK, pydantic, aiohttp and ours
    assert oldest < 1_000  # left for full collections to examine: almost nothing
    assert thresholds == [10_000, 10, 10]  # young objects collected after 10,000 new ones; the older generations as CPython has them
