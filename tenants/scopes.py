"""The scopes an API key (or OAuth grant) can hold. A JWT of a member holds all of them."""

RESOURCES_WITH_READ_WRITE = ("integrations", "routes", "workflows", "apps", "entities")
ALL_SCOPES = (
    "integrations:read",
    "integrations:write",
    "routes:read",
    "routes:write",
    "workflows:read",
    "workflows:write",
    "workflows:run",
    "apps:read",
    "apps:write",
    "entities:read",
    "entities:write",
    "mcp:use",
)


def normalize_scopes(scopes):
    """Validate and de-duplicate scopes, keeping the canonical order. None or empty means all."""
    if not scopes:
        return list(ALL_SCOPES)
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown:
        raise ValueError(f"Unknown scope(s) {', '.join(unknown)}; choose from {', '.join(ALL_SCOPES)}.")
    return [s for s in ALL_SCOPES if s in set(scopes)]
