from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

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

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include(api_patterns)),
    path("agent/mcp/", include(agent_urlpatterns)),
    path("hooks/<slug:tenant_slug>/<slug:workflow_slug>/<str:token>", webhook, name="workflow-webhook"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("entities_app.urls")),
]
