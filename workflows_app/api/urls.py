from django.urls import path
from rest_framework.routers import SimpleRouter

from workflows_app.api import views

router = SimpleRouter(trailing_slash=True)
router.register("workflows", views.WorkflowViewSet, basename="workflow")
router.register("runs", views.RunViewSet, basename="run")
router.register("mcp-servers", views.McpServerViewSet, basename="mcpserver")
urlpatterns = router.urls

agent_urlpatterns = [
    path("servers", views.AgentMcpViewSet.as_view({"get": "servers"}), name="agent-mcp-servers"),
    path("servers/<str:name>/tools", views.AgentMcpViewSet.as_view({"get": "tools"}), name="agent-mcp-tools"),
    path("execute", views.AgentMcpViewSet.as_view({"post": "execute"}), name="agent-mcp-execute"),
]
