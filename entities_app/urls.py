from django.urls import path

from entities_app import views

urlpatterns = [
    path("apps/<slug:tenant_slug>/<slug:app_slug>/", views.app_page, name="app-home"),
    path("apps/<slug:tenant_slug>/<slug:app_slug>/<path:page_path>", views.app_page, name="app-page"),
]
