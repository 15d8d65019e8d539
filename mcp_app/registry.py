"""One definition per MCP tool. A tool is a short adapter: JSON arguments in, service call, JSON out.

Add a tool with the `tool` decorator: name, title, the scope it needs, its input and output JSON
Schemas and its hints; the docstring becomes the description the assistant reads. The hints say
what the tool does, for clients that decide from them whether to ask the user: `read_only` (lists
and gets), `destructive` (deletes, and updates that replace lists), `open_world` (it reaches
systems outside Backflow: upstream APIs, MCP servers, LLMs).
"""

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
            input_schema=public_schema(self._published_input()),
            output_schema=self.output_schema,
            annotations=types.ToolAnnotations(  # the title is the tool's own, not repeated here
                read_only_hint=self.read_only,
                destructive_hint=self.destructive,
                idempotent_hint=self.idempotent,
                open_world_hint=self.open_world,
            ),
        )


    def _published_input(self):
        if self.same_as is None:
            return self.input_schema
        properties = {}
        for key, spec in self.input_schema["properties"].items():
            if spec.get("type") == "array" and "properties" in spec.get("items", {}):
                spec = {"type": "array", "items": {"type": "object"},
                        "description": f"{spec.get('description', '')} Each item as in {self.same_as}'s input schema.".strip()}
            elif "properties" in spec:
                spec = {"type": "object", "description": f"{spec.get('description', '')} As in {self.same_as}'s input schema.".strip()}
            properties[key] = spec
        return {**self.input_schema, "properties": properties}


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


def _load_tools():
    from mcp_app import tools  # noqa: F401  (importing registers every tool)
