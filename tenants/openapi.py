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
