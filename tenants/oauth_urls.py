"""OAuth endpoints under /o/ (DOT's namespace, with our consent and registration views)."""

from django.urls import path
from oauth2_provider import views

from tenants.oauth import ConsentView, RegistrationManagementView, RegistrationView, TokenView

app_name = "oauth2_provider"

urlpatterns = [
    path("authorize/", ConsentView.as_view(), name="authorize"),
    path("token/", TokenView.as_view(), name="token"),  # the supported grant types only
    path("revoke_token/", views.RevokeTokenView.as_view(), name="revoke-token"),
    path("introspect/", views.IntrospectTokenView.as_view(), name="introspect"),
    path("register/", RegistrationView.as_view(), name="dcr-register"),
    path("register/<str:client_id>/", RegistrationManagementView.as_view(), name="dcr-register-management"),
    path("authorized_tokens/", views.AuthorizedTokensListView.as_view(), name="authorized-token-list"),
    path("authorized_tokens/<slug:pk>/delete/", views.AuthorizedTokenDeleteView.as_view(), name="authorized-token-delete"),
]
