from rest_framework.routers import SimpleRouter

from integrations_app.api import views

router = SimpleRouter(trailing_slash=True)
router.register("integrations", views.IntegrationViewSet, basename="integration")
router.register("routes", views.RouteViewSet, basename="route")
router.register("secrets", views.SecretViewSet, basename="secret")
urlpatterns = router.urls
