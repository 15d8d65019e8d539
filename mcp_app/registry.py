"""One definition per MCP tool. A tool is a short adapter: JSON arguments in, service call, JSON out.

Add a tool with the `tool` decorator: name, title, the scope it needs, its input and output JSON
Schemas and its hints; the docstring becomes the description the assistant reads. The hints say
what the tool does, for clients that decide from them whether to ask the user: `read_only` (lists
and gets), `destructive` (deletes, and updates that replace lists), `open_world` (it reaches
systems outside Backflow: upstream APIs, MCP servers, LLMs).
"""

import functools
import inspect
from dataclasses import dataclass

import mcp_types as types

from backflow.validation import public_schema

REGISTRY = {}


@dataclass(frozen=True)
class ToolDefinition:
    name: str
    title: str
    description: str
    scope: str  # the key scope (or local-mode permission) needed to see and call it
    input_schema: dict  # validates arguments; published without our x-… keywords
    output_schema: dict  # what every successful answer's structuredContent satisfies (mcp_app/outputs.py)
    handler: object  # (ctx: ToolContext, args: dict) -> JSON object
    read_only: bool = False
    destructive: bool = False
    idempotent: bool = False
    open_world: bool = False
    local_mode: bool = False  # also offered by `mcp_stdio` on local files
    # An update tool publishes the document's nested parts as plain objects and points at the create
    # tool's schema (same document): tools/list stays compact; arguments are checked in full anyway.
    same_as: str | None = None

    @property
    def is_async(self):
        """An `async def` handler waits on something outside without holding a thread; it does
        its own database work through backflow.sync.in_thread."""
        return inspect.iscoroutinefunction(self.handler)

    def to_mcp(self):
        return types.Tool(
            name=self.name,
            title=self.title,
            description=self.description,
            input_schema=compact(public_schema(self._published_input())),
            output_schema=self.output_schema,
            # The title is the tool's own, not repeated here; a false readOnly/idempotent hint is the
            # protocol's default and goes unsaid, destructive and openWorld (default true) never do.
            annotations=types.ToolAnnotations(
                read_only_hint=self.read_only or None,
                destructive_hint=self.destructive,
                idempotent_hint=self.idempotent or None,
                open_world_hint=self.open_world,
            ),
        )


    def _published_input(self):
        """An update tool's fields, but for the ones naming what it updates, point at the create
        tool's schema: same document, published once."""
        if self.same_as is None:
            return self.input_schema
        properties = {}
        for key, spec in self.input_schema["properties"].items():
            if key not in self.input_schema.get("required", ()):
                spec = {"type": spec["type"]} if "type" in spec else {}
                spec["description"] = f"As in {self.same_as}."
            properties[key] = spec
        return {**self.input_schema, "properties": properties}


# Size bounds are checked on every call and named in its error; publishing them made tools/list
# larger (and some model providers refuse them in tool schemas).
UNPUBLISHED_BOUNDS = {"maxLength", "minLength", "maxItems", "minItems", "maxProperties", "minProperties", "title"}


def compact(schema):
    """A published schema without its size bounds, and an enum that takes any case (methods) in
    lower case only (property names are left alone)."""
    if isinstance(schema, list):
        return [compact(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key in UNPUBLISHED_BOUNDS:
            continue
        if key == "enum" and all(isinstance(v, str) for v in value) and {v.upper() for v in value} <= set(value) > {v.lower() for v in value}:
            out[key] = sorted({v.lower() for v in value}, key=value.index)  # "get" stands for "GET" too (case is free)
            continue
        if key in ("properties", "$defs"):
            out[key] = {name: compact(sub) for name, sub in value.items()}
        else:
            out[key] = compact(value)
    return out


def tool(*, name, title, scope, schema, output, read_only=False, destructive=False, idempotent=False, open_world=False,
         local_mode=False, same_as=None):
    def register(handler):
        if name in REGISTRY:
            raise ValueError(f"MCP tool {name!r} is defined twice.")
        REGISTRY[name] = ToolDefinition(
            name=name, title=title, description=inspect.cleandoc(handler.__doc__ or ""), scope=scope,
            input_schema=schema, output_schema=output, handler=handler, read_only=read_only, destructive=destructive,
            idempotent=idempotent or read_only, open_world=open_world, local_mode=local_mode, same_as=same_as,
        )
        return handler

    return register


def visible_tools(*, scopes, local=False):
    """Names of the tools a connection with these scopes may list and call."""
    _load_tools()
    return frozenset(
        name for name, definition in REGISTRY.items()
        if definition.scope in scopes and (definition.local_mode or not local)
    )


@functools.lru_cache(maxsize=64)
def published(names):
    """The tools/list entries of `names` (a frozenset, as visible_tools gives), sorted by name.
    Built once per set: building all of them took a list_tools ~0.6 ms of CPU, and the registry
    does not change once the tools are imported (a set per combination of scopes, so few)."""
    return tuple(REGISTRY[name].to_mcp() for name in sorted(names))


def _load_tools():
    from mcp_app import tools  # noqa: F401  (importing registers every tool)
