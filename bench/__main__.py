"""`make bench`: run every benchmark, each in its own process, and write bench/results/latest.json
plus bench/results/latest.md (each row a ratio against the peer measured in the same run).

Run one with `python -m bench routes` (names: the modules of this folder)."""

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BENCHES = ["mcp_stdio", "mcp_remote", "routes", "entities", "workflows"]
CHILD = (
    "import inspect, json, sys; from bench import {name} as m; "
    "r = m.main([]) if inspect.signature(m.main).parameters else m.main(); "
    "json.dump(r, open(sys.argv[1], 'w'), default=str)"
)


def machine():
    memory = next((line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal")), "?") if os.path.exists("/proc/meminfo") else "?"
    return {
        "platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
        "memoryKiB": memory, "loadAverage": os.getloadavg(), "processor": platform.processor() or platform.machine(),
        "database": os.environ.get("DATABASE_URL", "sqlite (embedded)"), "redis": bool(os.environ.get("REDIS_URL")),
    }


def run(name):
    out = HERE / "results" / f".{name}.json"
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", CHILD.format(name=name), str(out)], cwd=ROOT, text=True)
    elapsed = round(time.monotonic() - started, 1)
    if proc.returncode != 0 or not out.exists():
        return {"error": f"exited with {proc.returncode}", "seconds": elapsed}
    result = json.loads(out.read_text())
    out.unlink()
    return {"result": result, "seconds": elapsed}


def ratios(value, path=""):
    """(metric path, value) for every key that names a ratio or a target verdict."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from ratios(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from ratios(item, f"{path}[{index}]")
    elif any(word in path.lower().rsplit(".", 1)[-1] for word in ("ratio", "target", "met", "ok")):
        yield path, value


def main(argv=None):
    names = (argv if argv is not None else sys.argv[1:]) or BENCHES
    (HERE / "results").mkdir(exist_ok=True)
    report = {"machine": machine(), "startedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "benches": {}}
    for name in names:
        print(f"== {name}", flush=True)
        report["benches"][name] = run(name)
    report["machine"]["loadAverageAfter"] = os.getloadavg()
    (HERE / "results" / "latest.json").write_text(json.dumps(report, indent=2, default=str))
    lines = ["# Benchmarks", "", f"Machine: {report['machine']['platform']}, {report['machine']['cpus']} CPUs, "
             f"Python {report['machine']['python']}, load {report['machine']['loadAverage'][0]:.1f} at start.", "",
             "| bench | metric | value |", "|---|---|---|"]
    for name, outcome in report["benches"].items():
        if "error" in outcome:
            lines.append(f"| {name} | error | {outcome['error']} |")
            continue
        for metric, value in ratios(outcome["result"]):
            lines.append(f"| {name} | {metric} | {value:.3g} |" if isinstance(value, float) else f"| {name} | {metric} | {value} |")
    (HERE / "results" / "latest.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    main()
