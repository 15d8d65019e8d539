"""One definition per MCP tool. A tool is a short adapter: JSON arguments in, service call, JSON out.

Add a tool with the `tool` decorator: name, title, the scope it needs, its input JSON Schema and
its hints; the docstring becomes the description the assistant reads.
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
    handler: object  # (ctx: ToolContext, args: dict) -> JSON object
    read_only: bool = False
    destructive: bool = False
    idempotent: bool = False
    local_mode: bool = False  # also offered by `mcp_stdio` on local files

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
            input_schema=public_schema(self.input_schema),
            annotations=types.ToolAnnotations(
                title=self.title,
                read_only_hint=self.read_only,
                destructive_hint=self.destructive,
                idempotent_hint=self.idempotent,
                open_world_hint=False,
            ),
        )


def tool(*, name, title, scope, schema, read_only=False, destructive=False, idempotent=False, local_mode=False):
    def register(handler):
        if name in REGISTRY:
            raise ValueError(f"MCP tool {name!r} is defined twice.")
        REGISTRY[name] = ToolDefinition(
            name=name, title=title, description=inspect.cleandoc(handler.__doc__ or ""), scope=scope,
            input_schema=schema, handler=handler, read_only=read_only, destructive=destructive,
            idempotent=idempotent or read_only, local_mode=local_mode,
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
