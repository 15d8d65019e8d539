"""`make bench`: run every benchmark, each in its own process, and write bench/results/latest.json
plus bench/results/latest.md (each row a ratio against the peer measured in the same run).

Run one with `python -m bench routes` (names: BENCHES). A benchmark's `main()` returns a dict; when
it has `rows` ([{metric, value, peer?, ratio?, target?, met?}], see bench.support.row) the table
shows those, otherwise every key naming a ratio or a target verdict (see `ratios`); `about` and
`database` describe what it ran on."""

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BENCHES = ["mcp_stdio", "mcp_remote", "routes", "entities", "workflows", "load_mcp", "load_routes", "load_workflows", "instrumentation"]
CHILD = (
    "import inspect, json, sys; from bench import {name} as m; "
    "r = m.main([]) if inspect.signature(m.main).parameters else m.main(); "
    "json.dump(r, open(sys.argv[1], 'w'), default=str)"
)


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib():
    try:
        with open("/proc/meminfo") as meminfo:
            kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal"))
        return round(kib / 1024 / 1024, 1)
    except (OSError, StopIteration):
        return None


def _without_password(url):
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


def machine():
    from bench.support import PRODUCTION, production_profile

    database, redis_url, skipped = production_profile()
    return {
        "cpu": _cpu_model(), "cpus": os.cpu_count(), "memoryGiB": _memory_gib(), "loadAverage": os.getloadavg(),
        "platform": platform.platform(), "python": platform.python_version(),
        "database": "each bench makes its own throw-away database (see the notes)"
                    + (f"; the{PRODUCTION} rows on a throw-away database on the Postgres server of DATABASE_URL="
                       f"{_without_password(database)}" if database else f"; {skipped}"),
        "redis": f"{_without_password(redis_url)} (the{PRODUCTION} rows)" if redis_url else "none (in-memory layers and cache)",
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


def _fmt(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "met" if value else "MISSED"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def table_rows(result):
    """(metric, value, peer, ratio) lines of one benchmark's result."""
    if result.get("rows"):
        for line in result["rows"]:
            value = _fmt(line["value"])
            if "target" in line:
                value += f" (target {line['target']}: {_fmt(line['met'])})"
            yield line["metric"], value, _fmt(line.get("peer")), _fmt(line.get("ratio"))
        return
    for metric, value in ratios(result):
        if "ratio" in metric.lower().rsplit(".", 1)[-1] and not isinstance(value, bool):
            yield metric, "", "", _fmt(value)
        else:
            yield metric, _fmt(value), "", ""


def markdown(report):
    m = report["machine"]
    lines = ["# Benchmarks", "",
             f"Machine: {m['cpu']}, {m['cpus']} CPUs, {m['memoryGiB']} GiB RAM; {m['platform']}, Python {m['python']}; "
             f"load average {m['loadAverage'][0]:.1f} at start, {m['loadAverageAfter'][0]:.1f} at the end "
             "(the CPUs are shared: read the ratios, measured in the same run, more than absolute numbers).",
             f"Database: {m['database']}. Redis: {m['redis']}. Run {report['startedAt']}.", "",
             "| bench | metric | ours | peer | ours/peer |", "|---|---|---|---|---|"]
    notes = []
    for name, outcome in report["benches"].items():
        if "error" in outcome:
            lines.append(f"| {name} | error | {outcome['error']} | | |")
            continue
        result = outcome["result"]
        for metric, value, peer, ratio in table_rows(result):
            lines.append(f"| {name} | {metric} | {value} | {peer} | {ratio} |")
        about = result.get("about") or (f"database: {result['database']}" if isinstance(result.get("database"), str) else "")
        notes.append(f"- {name} ({outcome['seconds']} s){': ' + about if about else ''}")
    return "\n".join(lines + ["", "Notes:", *notes]) + "\n"


def main(argv=None):
    names = (argv if argv is not None else sys.argv[1:]) or BENCHES
    unknown = [name for name in names if name not in BENCHES]
    if unknown:
        raise SystemExit(f"unknown bench {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    (HERE / "results").mkdir(exist_ok=True)
    report = {"machine": machine(), "startedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "benches": {}}
    for name in names:
        print(f"== {name}", flush=True)
        report["benches"][name] = run(name)
    report["machine"]["loadAverageAfter"] = os.getloadavg()
    (HERE / "results" / "latest.json").write_text(json.dumps(report, indent=2, default=str))
    text = markdown(report)
    (HERE / "results" / "latest.md").write_text(text)
    print(text)
    return report


if __name__ == "__main__":
    main()
