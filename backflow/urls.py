from django.contrib import admin
from django.contrib.auth.views import LoginView, LogoutView, PasswordChangeDoneView
from django.shortcuts import redirect
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from oauth2_provider.views import OAuthServerMetadataView

from backflow.pages import guide, home
from tenants import openapi  # noqa: F401  (registers the OpenAPI auth scheme, before the schema views run)
from tenants.oauth import McpResourceMetadataView
from tenants.signin import LimitedPasswordChangeView, limit_failed_sign_ins

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
# One password change page for everyone, whose old-password check is a limited sign-in.
admin.site.password_change = lambda request, extra_context=None: redirect("password_change")

urlpatterns = [
    path("", home, name="home"),
    path("docs/<slug:name>.md", guide, name="guide"),
    path("admin/", admin.site.urls),
    path("api/", include(api_patterns)),
    path("agent/mcp/", include(agent_urlpatterns)),
    path("hooks/<slug:tenant_slug>/<slug:workflow_slug>/<str:token>", webhook, name="workflow-webhook"),
    # Sign-in, sign-out and password change only (not django.contrib.auth.urls): no password
    # reset, since no mail is configured; operators reset passwords with `manage.py changepassword`
    # or the admin. Every password check here counts against the sign-in limit (tenants/signin.py).
    path("accounts/login/", limit_failed_sign_ins(LoginView.as_view()), name="login"),
    path("accounts/logout/", LogoutView.as_view(), name="logout"),
    path("accounts/password_change/", limit_failed_sign_ins(LimitedPasswordChangeView.as_view()), name="password_change"),
    path("accounts/password_change/done/", PasswordChangeDoneView.as_view(), name="password_change_done"),
    path("o/", include("tenants.oauth_urls")),
    path(".well-known/oauth-authorization-server", OAuthServerMetadataView.as_view(), name="oauth-server-metadata"),
    path(".well-known/oauth-protected-resource", McpResourceMetadataView.as_view(), name="oauth-resource-metadata"),
    path(".well-known/oauth-protected-resource/mcp", McpResourceMetadataView.as_view(), name="oauth-resource-metadata-mcp"),
    path("", include("entities_app.urls")),
]

handler404 = "backflow.api_errors.not_found"
handler500 = "backflow.api_errors.server_error"
