from django.urls import path
from rest_framework.routers import SimpleRouter

from tenants.api import views

router = SimpleRouter(trailing_slash=True)
router.register("keys", views.ApiKeyViewSet, basename="apikey")
router.register("audit", views.AuditEventViewSet, basename="audit")
router.register("oauth-authorizations", views.OAuthAuthorizationViewSet, basename="oauth-authorization")

urlpatterns = [
    path("auth/token", views.TokenObtainView.as_view(), name="auth-token"),
    path("auth/refresh", views.TokenRefreshView.as_view(), name="auth-refresh"),
    path("auth/logout", views.LogoutView.as_view(), name="auth-logout"),
    *router.urls,
]
