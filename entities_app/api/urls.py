from rest_framework.routers import SimpleRouter

from entities_app.api import views

router = SimpleRouter(trailing_slash=True)
router.register("collections", views.CollectionViewSet, basename="collection")
router.register(r"collections/(?P<collection_name>[^/.]+)/entities", views.EntityViewSet, basename="entity")
router.register("apps", views.AppViewSet, basename="app")
urlpatterns = router.urls
