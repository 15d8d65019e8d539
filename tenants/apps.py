from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Tenants and access"

    def ready(self):
        from django.db.models.signals import pre_save
        from oauth2_provider.models import get_application_model

        from tenants import openapi  # noqa: F401  (registers the OpenAPI auth scheme)
        from tenants.oauth import refuse_rule_breaking_metadata_document

        # Clients identified by a metadata document URL obey the registration's redirect URI rules.
        pre_save.connect(refuse_rule_breaking_metadata_document, sender=get_application_model(),
                         dispatch_uid="tenants.oauth.metadata-document-redirect-uris")
