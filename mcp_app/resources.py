"""MCP resources and prompts: the reference an assistant reads while it builds, and the tenant's
own documents.

- `backflow://docs/{topic}`: sections of the project's docs/ (one source: the guides people read),
  so tool descriptions can stay short and point here.
- `backflow://integrations/{name}`, `backflow://workflows/{id}`, `backflow://apps/{id}`: the
  tenant's documents (local mode: the integration files), readable only where the connection may
  call the matching get_ tool.
- Prompts that start the build–test loop for the seed's own requests.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import mcp_types as types
from django.conf import settings
from mcp.shared.exceptions import MCPError

DOCS = Path(settings.BASE_DIR) / "docs"
# topic -> (description, [(file, heading), …]): each section runs to the next heading of its level or above.
TOPICS = {
    "templates": ("{{…}} placeholders: which roots each place may use, types, encoding.",
                  [("tenant-guide.md", "### Templates"), ("routes-example.md", "## Where params go")]),
    "auth": ("Integration auth types and what each call sends.", [("tenant-guide.md", "### Auth types")]),
    "integrations": ("The integration document, with an example.", [("tenant-guide.md", "## Integrations")]),
    "routes": ("Route documents, how actions run, and every error answer.",
               [("tenant-guide.md", "## Routes"), ("routes-example.md", "## How the actions are scheduled"),
                ("routes-example.md", "## Error answers")]),
    "workflows": ("The workflow document: steps, tools, triggers, runs, MCP servers.", [("tenant-guide.md", "## Workflows")]),
    "filters": ("The entity filter language, sort and cursors.", [("tenant-guide.md", "### Listing: filters, sort, cursors")]),
    "apps": ("App pages and their components and bindings.", [("tenant-guide.md", "## Apps")]),
    "build-loop": ("Build, test, read what failed, fix: the tools in order.", [("mcp-guide.md", "## The build–test loop")]),
}
DOCS_TEMPLATE = "backflow://docs/{topic}"
NOT_FOUND = types.INVALID_PARAMS  # the MCP specification's answer for an unknown resource


def section(file, heading):
    """The markdown of one section of a docs file (heading included)."""
    lines = (DOCS / file).read_text(encoding="utf-8").splitlines()
    level = len(heading) - len(heading.lstrip("#"))
    start = lines.index(heading)
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].startswith("#") and len(lines[i]) - len(lines[i].lstrip("#")) <= level), len(lines))
    return "\n".join(lines[start:end]).strip() + "\n"


def docs_text(topic):
    return "\n\n".join(section(file, heading) for file, heading in TOPICS[topic][1])


@dataclass(frozen=True)
class DocumentKind:
    prefix: str  # backflow://<kind>/
    argument: str  # the get_ tool's argument the rest of the URI fills
    getter: str  # the get_ tool that reads it: the connection must be allowed to call it
    description: str

    @property
    def template(self):
        return f"{self.prefix}{{{self.argument}}}"

    def key(self, uri):
        rest = uri.removeprefix(self.prefix)
        return rest if uri.startswith(self.prefix) and rest and "/" not in rest else None


KINDS = {
    "integrations": DocumentKind("backflow://integrations/", "name", "get_integration", "An integration of this tenant (or local file)."),
    "workflows": DocumentKind("backflow://workflows/", "id", "get_workflow", "A workflow document of this tenant."),
    "apps": DocumentKind("backflow://apps/", "id", "get_app", "An app document of this tenant."),
}


async def list_resources(ctx):
    return types.ListResourcesResult(resources=[
        types.Resource(name=f"docs-{topic}", title=f"Backflow reference: {topic}", uri=f"backflow://docs/{topic}",
                       description=description, mime_type="text/markdown")
        for topic, (description, _) in TOPICS.items()
    ])


async def list_resource_templates(ctx):
    templates = [types.ResourceTemplate(name="docs", title="Backflow reference", uri_template=DOCS_TEMPLATE,
                                        description=f"Topics: {', '.join(TOPICS)}.", mime_type="text/markdown")]
    templates += [types.ResourceTemplate(name=name, title=name.title(), uri_template=kind.template,
                                         description=kind.description, mime_type="application/json")
                  for name, kind in KINDS.items() if kind.getter in ctx.allowed]
    return types.ListResourceTemplatesResult(resource_templates=templates)


async def read_resource(ctx, uri, call_tool):
    """The resource at `uri`; a tenant document is read through its get_ tool (`call_tool`), with
    that tool's permission, validation and audit."""
    if uri.startswith("backflow://docs/"):
        topic = uri.removeprefix("backflow://docs/")
        if topic not in TOPICS:
            raise MCPError(NOT_FOUND, f"No reference topic {topic!r}; topics: {', '.join(TOPICS)}.")
        return types.ReadResourceResult(contents=[types.TextResourceContents(uri=uri, mime_type="text/markdown", text=docs_text(topic))])
    for kind in KINDS.values():
        key = kind.key(uri)
        if key is not None and kind.getter in ctx.allowed:
            result = await call_tool(ctx, kind.getter, {kind.argument: key})
            if result.is_error:
                raise MCPError(NOT_FOUND, json.loads(result.content[0].text)["error"])
            return types.ReadResourceResult(contents=[types.TextResourceContents(
                uri=uri, mime_type="application/json", text=result.content[0].text)])
    raise MCPError(NOT_FOUND, f"No resource {uri!r} here; resources/list and resources/templates/list show what there is.")


# -- prompts ---------------------------------------------------------------------------------------

PROMPTS = {
    "setup_tenant_api": (
        "Build and test a tenant's API from a business and the services it uses (the seed's requests).",
        [("business", "What the business is, e.g. \"a fitness studio\" or \"property management\".", True),
         ("apis", "The services to connect, e.g. \"Mindbody, Stripe, Twilio\".", True)],
        "Set up the API for {business}, using {apis}. Follow backflow://docs/build-loop: for each service, "
        "create the integration (list_secrets shows the credentials stored; ask me to store any that is missing, "
        "never put a credential in a document), try each endpoint with call_endpoint, then create the routes "
        "my product needs and test_route each one, reading the trace and fixing what fails until it answers 200. "
        "Finish with the list of routes and what each returns.",
    ),
    "integration_from_openapi": (
        "Create an integration from an OpenAPI document, then try its endpoints.",
        [("url_or_spec", "The OpenAPI document's URL, or the document itself (JSON or YAML).", True)],
        "Create an integration from this OpenAPI document with import_openapi: {url_or_spec}. Keep the operations a "
        "tenant's routes will need (use include), name the secret its auth needs (list_secrets; ask me to store it), "
        "then call_endpoint one read-only operation and show me what came back.",
    ),
    "app_over_collection": (
        "Build an app (table, detail, form, stats) over one entity collection.",
        [("collection", "The collection's name.", True)],
        "Build an app over the collection {collection}: read its schema with list_collections, then create_app with a "
        "table page (the most useful fields, sorted), a detail view, a form for new entries and a stat or two "
        "(backflow://docs/apps). Give me its URL.",
    ),
}


async def list_prompts(ctx):
    return types.ListPromptsResult(prompts=[
        types.Prompt(name=name, description=description,
                     arguments=[types.PromptArgument(name=arg, description=text, required=required) for arg, text, required in arguments])
        for name, (description, arguments, _) in PROMPTS.items()
    ])


async def get_prompt(ctx, name, arguments):
    if name not in PROMPTS:
        raise MCPError(NOT_FOUND, f"No prompt {name!r}; prompts: {', '.join(PROMPTS)}.")
    description, expected, text = PROMPTS[name]
    values = {arg: str((arguments or {}).get(arg, "")).strip() for arg, _, _ in expected}
    missing = [arg for arg, _, required in expected if required and not values[arg]]
    if missing:
        raise MCPError(types.INVALID_PARAMS, f"Prompt {name} needs {', '.join(missing)}.")
    return types.GetPromptResult(description=description, messages=[
        types.PromptMessage(role="user", content=types.TextContent(text=text.format(**values)))])
