"""The pages a newcomer meets first: `/`, which says what this server is and where to go, and the
guides of docs/ rendered for reading in a browser."""

from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.http import Http404
from django.shortcuts import render
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_safe

from entities_app.pages import MARKDOWN
from tenants.models import Membership
from tenants.oauth import mcp_resource, public_base

# The guides served at /docs/<name>.md (relative links between them keep working); an allowlist,
# so the URL can never name another file.
GUIDES = {
    "mcp-guide": "Connecting AI assistants (MCP)",
    "tenant-guide": "Tenant guide: integrations, routes, workflows, apps",
    "operator-guide": "Operator guide",
    "security": "Security",
    "routes-example": "Example: an API route",
    "workflows-example": "Example: a workflow",
    "contract-notes": "Contract notes",
}


@require_safe
def home(request):
    """What Backflow is, the MCP URL to paste into a client, and the ways in (admin, API docs,
    sign-in, guides); a signed-in person also sees their tenants."""
    memberships = []
    if request.user.is_authenticated:
        memberships = list(Membership.all_tenants.filter(user=request.user).select_related("tenant").order_by("tenant__slug"))
    base = public_base(request)
    return render(request, "home.html", {
        "mcp_url": mcp_resource(base), "sse_url": mcp_resource(base) + "/sse",
        "memberships": memberships, "guides": GUIDES,
    })


@lru_cache(maxsize=len(GUIDES))
def rendered_guide(name):
    # Raw HTML is off in this renderer: the page shows the guide's text, never markup inside it.
    return mark_safe(MARKDOWN.render((Path(settings.BASE_DIR) / "docs" / f"{name}.md").read_text(encoding="utf-8")))


@require_safe
def guide(request, name):
    """One guide of docs/, rendered."""
    if name not in GUIDES:
        raise Http404(f"No guide {name!r}; the guides are listed at /.")
    return render(request, "guide.html", {"title": GUIDES[name], "body": rendered_guide(name)})
