"""`manage.py mcp_stdio` over stdio, side by side with the reference server-everything `echo`.

    .venv/bin/python bench/mcp_stdio.py [--integrations 200] [--calls 300] [--spawns 5]

Both servers are driven by the same MCP SDK client code, in the same run:
- tools/call latency (p50/p95 of sequential calls after a warm-up, the servers' calls timed in
  alternating turns): our get_integration and list_integrations on a local-mode folder of N
  integrations, and server-everything's echo (Node 22 from tests/peers);
- start-up: time from spawning the process to the `initialize` answer, median of several spawns,
  also of the bare Python SDK server below (`python_sdk_floor`): importing the SDK is most of any
  Python MCP server's start-up, so ours minus it is what Django and Backflow add.
A bare low-level server on the same Python SDK (`python_sdk_floor`, one no-op tool) shows how much
of the gap to echo is the SDK's own per-message cost rather than Backflow's; the same server
answering what ours answers (`python_sdk_floor_same_answer`: get_integration's tool entry with its
outputSchema, and ours' recorded result for each name) splits the rest into the answer's own cost
(serialising it, the client's checks of it) and our code's. Ours runs on uvloop (backflow.event_loop,
as `mcp_stdio` starts); both floors run a second time on uvloop (`…_uvloop`), so the ratios show
ours against the SDK as it ships and against the same server on ours' loop.
Targets: get_integration p50 within 2x of echo p50; our start-up under 1.5 s.
`main()` returns the numbers as a dict (for a `python -m bench` runner).
"""

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client

if not __package__:  # run as a script (python bench/mcp_stdio.py): the project root on the path for `bench.support`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.support import alternating_calls  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
MANAGE = ROOT / "manage.py"
PEERS = ROOT / "tests" / "peers" / "node_modules"
NODE = PEERS / "node" / "bin" / "node"
EVERYTHING = PEERS / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"

# The floor of any Python server on this SDK: a bare low-level Server whose one tool does nothing.
SDK_FLOOR_SERVER = """
import anyio, json
import mcp_types as types
from mcp.server import Server
from mcp.server.stdio import stdio_server

async def on_list_tools(ctx, params):
    return types.ListToolsResult(tools=[types.Tool(name="noop", input_schema={"type": "object"})])

async def on_call_tool(ctx, params):
    value = {"arguments": params.arguments}
    return types.CallToolResult(content=[types.TextContent(text=json.dumps(value))], structured_content=value)

async def main():
    server = Server("sdk-floor", on_list_tools=on_list_tools, on_call_tool=on_call_tool)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())

anyio.run(main)
"""

# The same floor answering what ours answers: get_integration's tool entry as ours lists it (its
# outputSchema, which the client then checks every result against) and, for each name, ours' own
# result for it, read from the JSON file named by argv[1] before the timed calls; a dict lookup per call.
SDK_SAME_ANSWER_SERVER = """
import anyio, json, sys
import mcp_types as types
from mcp.server import Server
from mcp.server.stdio import stdio_server

recorded = json.load(open(sys.argv[1], encoding="utf-8"))
tool = types.Tool.model_validate(recorded["tool"])
answers = recorded["answers"]

async def on_list_tools(ctx, params):
    return types.ListToolsResult(tools=[tool])

async def on_call_tool(ctx, params):
    value = answers[params.arguments["name"]]
    return types.CallToolResult(content=[types.TextContent(text=json.dumps(value, ensure_ascii=False))], structured_content=value)

async def main():
    server = Server("sdk-floor-same-answer", on_list_tools=on_list_tools, on_call_tool=on_call_tool)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())

anyio.run(main)
"""

# The floors' second run: the loop mcp_stdio installs, by the same function (the floors run from ROOT).
ON_UVLOOP = "from backflow.event_loop import install_event_loop\ninstall_event_loop('uvloop')\n"

GET_RATIO_TARGET = 2.0
STARTUP_TARGET_S = 1.5


def make_site(root, count):
    """A local-mode folder with `count` integrations (3 endpoints each) and a route per 10 of them."""
    integrations = root / "integrations"
    integrations.mkdir(parents=True)
    routes = []
    for i in range(count):
        name = f"service-{i:03d}"
        doc = {
            "name": name, "displayName": f"Service {i}", "description": f"Benchmark integration {i}",
            "baseUrl": f"https://api{i}.example.com/v1",
            "auth": {"type": "bearer", "secret": f"{{{{env.SERVICE_{i}_TOKEN}}}}"},
            "endpoints": [
                {"name": "listItems", "method": "get", "path": "/items", "query": {"page": "{{params.page}}"}},
                {"name": "getItem", "method": "get", "path": "/items/{id}"},
                {"name": "createItem", "method": "post", "path": "/items", "body": {"title": "{{params.title}}"}},
            ],
        }
        (integrations / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        if i % 10 == 0:
            routes.append({"id": f"route-{i}", "path": f"/s{i}/items", "method": "get", "description": "", "requireAuth": True,
                           "integrations": {"actions": [{"id": "list", "integration": name, "action": "listItems", "params": {}}]},
                           "response": None})
    (root / "config.json").write_text(json.dumps({"mcpServers": [], "routes": routes}, indent=2) + "\n", encoding="utf-8")
    mcp_config = root / "mcp-config.json"
    mcp_config.write_text(json.dumps({"enabled": True, "integrationsPath": "./integrations", "configPath": "./config.json",
                                      "autoReload": False}), encoding="utf-8")
    return mcp_config


def ours(mcp_config):
    return StdioServerParameters(command=PYTHON, args=[str(MANAGE), "mcp_stdio", str(mcp_config)], cwd=str(ROOT))


def echo_server():
    return StdioServerParameters(command=str(NODE), args=[str(EVERYTHING)], cwd=str(ROOT))


def sdk_floor_server(loop=""):
    return StdioServerParameters(command=PYTHON, args=["-c", loop + SDK_FLOOR_SERVER], cwd=str(ROOT))


def sdk_same_answer_server(recorded, loop=""):
    return StdioServerParameters(command=PYTHON, args=["-c", loop + SDK_SAME_ANSWER_SERVER, str(recorded)], cwd=str(ROOT))


async def record_answers(params, names, path, errlog):
    """Ours' get_integration tool entry and its result for each of `names`, written to `path` for
    the same-answer floor."""
    async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tool = next(t for t in (await session.list_tools()).tools if t.name == "get_integration")
        answers = {}
        for name in names:
            result = await session.call_tool("get_integration", {"name": name})
            if result.is_error or result.structured_content is None:
                raise RuntimeError(f"get_integration {name}: {result.content[0].text}")
            answers[name] = result.structured_content
    path.write_text(json.dumps({"tool": tool.model_dump(mode="json", by_alias=True, exclude_none=True), "answers": answers}),
                    encoding="utf-8")
    return path


def percentile(samples, fraction):
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(samples):
    return {"p50_ms": round(statistics.median(samples) * 1000, 3), "p95_ms": round(percentile(samples, 0.95) * 1000, 3),
            "n": len(samples)}


async def time_calls(servers, calls, count, warmup, errlog):
    """{label: [seconds]} for each (label, server, tool, arguments-for-i) in `calls`: one session per
    server, the labels timed in alternating turns (bench.support.alternating_calls)."""
    async with contextlib.AsyncExitStack() as stack:
        sessions = {}
        for name, params in servers.items():
            read, write = await stack.enter_async_context(stdio_client(params, errlog=errlog))
            sessions[name] = await stack.enter_async_context(ClientSession(read, write))
            await sessions[name].initialize()
        sides = {}
        for label, server, tool, arguments in calls:
            async def call(i, label=label, session=sessions[server], tool=tool, arguments=arguments):
                result = await session.call_tool(tool, arguments(i))
                if result.is_error:
                    raise RuntimeError(f"{label}: {tool} failed: {result.content[0].text}")

            sides[label] = call
        timed = await alternating_calls(sides, count, warmup)
    return {label: samples for label, (samples, _) in timed.items()}


async def time_startup(params, errlog):
    started = time.perf_counter()
    async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        return time.perf_counter() - started


async def measure(*, mcp_config, integrations, calls, spawns, warmup, errlog):
    names = [f"service-{i:03d}" for i in range(integrations)]
    recorded = await record_answers(ours(mcp_config), names, Path(mcp_config).parent / "recorded-answers.json", errlog)
    timed = await time_calls({"ours": ours(mcp_config), "echo": echo_server(), "floor": sdk_floor_server(),
                              "floor_same_answer": sdk_same_answer_server(recorded), "floor_uvloop": sdk_floor_server(ON_UVLOOP),
                              "floor_same_answer_uvloop": sdk_same_answer_server(recorded, ON_UVLOOP)}, [
        ("get_integration", "ours", "get_integration", lambda i: {"name": names[i % len(names)]}),
        ("list_integrations", "ours", "list_integrations", lambda i: {}),
        ("echo", "echo", "echo", lambda i: {"message": f"hello {i}"}),
        ("python_sdk_floor", "floor", "noop", lambda i: {"name": names[i % len(names)]}),
        ("python_sdk_floor_same_answer", "floor_same_answer", "get_integration", lambda i: {"name": names[i % len(names)]}),
        ("python_sdk_floor_uvloop", "floor_uvloop", "noop", lambda i: {"name": names[i % len(names)]}),
        ("python_sdk_floor_same_answer_uvloop", "floor_same_answer_uvloop", "get_integration",
         lambda i: {"name": names[i % len(names)]}),
    ], calls, warmup, errlog)
    ours_start, echo_start, floor_start = [], [], []
    for _ in range(spawns):  # alternate, so all see the same machine load
        ours_start.append(await time_startup(ours(mcp_config), errlog))
        echo_start.append(await time_startup(echo_server(), errlog))
        floor_start.append(await time_startup(sdk_floor_server(), errlog))

    results = {
        "load_average_1m": round(os.getloadavg()[0], 2),  # other work on the machine skews every number
        "integrations": integrations,
        "calls": calls,
        **{label: summary_ms(samples) for label, samples in timed.items()},
        "startup": {"ours_median_s": round(statistics.median(ours_start), 3), "echo_median_s": round(statistics.median(echo_start), 3),
                    "python_sdk_floor_median_s": round(statistics.median(floor_start), 3),
                    "ours_s": [round(s, 3) for s in ours_start], "echo_s": [round(s, 3) for s in echo_start],
                    "python_sdk_floor_s": [round(s, 3) for s in floor_start]},
    }
    echo_p50 = results["echo"]["p50_ms"]
    results["ratios"] = {
        "get_integration_p50_vs_echo": round(results["get_integration"]["p50_ms"] / echo_p50, 2),
        "list_integrations_p50_vs_echo": round(results["list_integrations"]["p50_ms"] / echo_p50, 2),
        "get_integration_p50_vs_python_sdk_floor": round(results["get_integration"]["p50_ms"] / results["python_sdk_floor"]["p50_ms"], 2),
        "python_sdk_floor_p50_vs_echo": round(results["python_sdk_floor"]["p50_ms"] / echo_p50, 2),
        "get_integration_p50_vs_python_sdk_floor_same_answer": round(
            results["get_integration"]["p50_ms"] / results["python_sdk_floor_same_answer"]["p50_ms"], 2),
        "python_sdk_floor_same_answer_p50_vs_python_sdk_floor": round(
            results["python_sdk_floor_same_answer"]["p50_ms"] / results["python_sdk_floor"]["p50_ms"], 2),
        "get_integration_p50_vs_python_sdk_floor_uvloop": round(
            results["get_integration"]["p50_ms"] / results["python_sdk_floor_uvloop"]["p50_ms"], 2),
        "get_integration_p50_vs_python_sdk_floor_same_answer_uvloop": round(
            results["get_integration"]["p50_ms"] / results["python_sdk_floor_same_answer_uvloop"]["p50_ms"], 2),
        "startup_vs_echo": round(results["startup"]["ours_median_s"] / results["startup"]["echo_median_s"], 2),
        "startup_vs_python_sdk_floor": round(results["startup"]["ours_median_s"] / results["startup"]["python_sdk_floor_median_s"], 2),
    }
    results["targets"] = {
        "get_integration_within_2x_echo": results["ratios"]["get_integration_p50_vs_echo"] <= GET_RATIO_TARGET,
        "startup_under_1_5_s": results["startup"]["ours_median_s"] < STARTUP_TARGET_S,
    }
    return results


def report(results):
    lines = [(f"mcp_stdio benchmark: {results['integrations']} integrations, {results['calls']} calls per tool "
             f"(load average {results['load_average_1m']} on {os.cpu_count()} CPUs)")]
    for label in ("get_integration", "list_integrations", "echo", "python_sdk_floor", "python_sdk_floor_same_answer",
                  "python_sdk_floor_uvloop", "python_sdk_floor_same_answer_uvloop"):
        r = results[label]
        lines.append(f"  {label:<35} p50 {r['p50_ms']:8.3f} ms   p95 {r['p95_ms']:8.3f} ms")
    s = results["startup"]
    lines.append(f"  start-up (to initialize answer, median of {len(s['ours_s'])}): ours {s['ours_median_s']:.3f} s, echo {s['echo_median_s']:.3f} s, "
                 f"python_sdk_floor {s['python_sdk_floor_median_s']:.3f} s (ours adds {s['ours_median_s'] - s['python_sdk_floor_median_s']:.3f} s)")
    ratios, targets = results["ratios"], results["targets"]
    lines.append(f"  ratio get_integration / echo p50: {ratios['get_integration_p50_vs_echo']:.2f}x "
                 f"(target <= {GET_RATIO_TARGET}x: {'met' if targets['get_integration_within_2x_echo'] else 'MISSED'})")
    lines.append(f"  ratio list_integrations / echo p50: {ratios['list_integrations_p50_vs_echo']:.2f}x")
    lines.append(f"  ratio python_sdk_floor / echo p50: {ratios['python_sdk_floor_p50_vs_echo']:.2f}x "
                 f"(what any server on the Python SDK pays); get_integration / floor: {ratios['get_integration_p50_vs_python_sdk_floor']:.2f}x")
    lines.append(f"  ratio floor answering get_integration's results / floor: "
                 f"{ratios['python_sdk_floor_same_answer_p50_vs_python_sdk_floor']:.2f}x (the answer's own cost); "
                 f"get_integration / that floor: {ratios['get_integration_p50_vs_python_sdk_floor_same_answer']:.2f}x (our own code)")
    lines.append(f"  the same floors on uvloop, as ours runs: get_integration / floor {ratios['get_integration_p50_vs_python_sdk_floor_uvloop']:.2f}x, "
                 f"/ same-answer floor {ratios['get_integration_p50_vs_python_sdk_floor_same_answer_uvloop']:.2f}x")
    lines.append(f"  ratio start-up ours / echo: {ratios['startup_vs_echo']:.2f}x "
                 f"(ours < {STARTUP_TARGET_S} s: {'met' if targets['startup_under_1_5_s'] else 'MISSED'})")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--integrations", type=int, default=200)
    parser.add_argument("--calls", type=int, default=300, help="timed calls per tool")
    parser.add_argument("--warmup", type=int, default=30, help="untimed calls per tool first")
    parser.add_argument("--spawns", type=int, default=5, help="start-ups timed per server")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if not (NODE.exists() and EVERYTHING.exists()):
        raise SystemExit("tests/peers/node_modules is missing: run `make peers` first.")
    with tempfile.TemporaryDirectory(prefix="backflow-bench-") as tmp, open(Path(tmp) / "stderr.log", "w") as errlog:
        mcp_config = make_site(Path(tmp) / "site", args.integrations)
        results = anyio.run(lambda: measure(mcp_config=mcp_config, integrations=args.integrations, calls=args.calls,
                                            spawns=args.spawns, warmup=args.warmup, errlog=errlog))
    print(json.dumps(results, indent=2) if args.json else report(results))
    return results


if __name__ == "__main__":
    main()
