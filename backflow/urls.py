from django.contrib import admin
from django.contrib.auth.views import LoginView
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from oauth2_provider.views import OAuthServerMetadataView

from tenants.oauth import McpResourceMetadataView
from tenants.signin import limit_failed_sign_ins

from workflows_app.api.urls import agent_urlpatterns
from workflows_app.views import webhook

api_patterns = [
    path("", include("tenants.api.urls")),
    path("", include("integrations_app.api.urls")),
    path("", include("entities_app.api.urls")),
    path("", include("workflows_app.api.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
]

# Staff passwords are guessed no faster than members' (the admin's own sign-in view, limited).
admin.site.login = limit_failed_sign_ins(admin.site.login)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include(api_patterns)),
    path("agent/mcp/", include(agent_urlpatterns)),
    path("hooks/<slug:tenant_slug>/<slug:workflow_slug>/<str:token>", webhook, name="workflow-webhook"),
    path("accounts/login/", limit_failed_sign_ins(LoginView.as_view()), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("o/", include("tenants.oauth_urls")),
    path(".well-known/oauth-authorization-server", OAuthServerMetadataView.as_view(), name="oauth-server-metadata"),
    path(".well-known/oauth-protected-resource", McpResourceMetadataView.as_view(), name="oauth-resource-metadata"),
    path(".well-known/oauth-protected-resource/mcp", McpResourceMetadataView.as_view(), name="oauth-resource-metadata-mcp"),
    path("", include("entities_app.urls")),
]

handler404 = "backflow.api_errors.not_found"
handler500 = "backflow.api_errors.server_error"
