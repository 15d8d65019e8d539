from drf_spectacular.extensions import OpenApiAuthenticationExtension


class BearerAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.authentication.BearerAuthentication"
    name = "bearer"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (bf_<prefix>_<secret>) or a JWT from /api/auth/token. "
            "For a JWT covering several tenants, pick one with the X-Backflow-Scope header.",
        }


def drop_stray_path_parameters(result, generator, request, public):
    """A viewset's class-level path parameter (`extend_schema(parameters=[... PATH])`, which names
    and describes the lookup) also lands on its list and create operations, whose paths have no
    such part; OpenAPI forbids a path parameter its path does not name."""
    for path, operations in result.get("paths", {}).items():
        for operation in operations.values():
            if isinstance(operation, dict) and "parameters" in operation:
                operation["parameters"] = [p for p in operation["parameters"] if p.get("in") != "path" or f"{{{p['name']}}}" in path]
    return result
