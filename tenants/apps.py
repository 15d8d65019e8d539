from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Tenants and access"

    def ready(self):
        from django.contrib.auth import get_user_model
        from django.db.models.signals import post_delete, post_save, pre_save
        from oauth2_provider.models import get_application_model

        from tenants.lifecycle import membership_removed, password_changed
        from tenants.models import Membership
        from tenants.oauth import refuse_rule_breaking_metadata_document

        # Clients identified by a metadata document URL obey the registration's redirect URI rules.
        pre_save.connect(refuse_rule_breaking_metadata_document, sender=get_application_model(),
                         dispatch_uid="tenants.oauth.metadata-document-redirect-uris")
        # A new password, or a membership removed, ends the person's OAuth grants (JWTs end by
        # themselves: tenants/authentication.py).
        post_save.connect(password_changed, sender=get_user_model(), dispatch_uid="tenants.lifecycle.password-changed")
        post_delete.connect(membership_removed, sender=Membership, dispatch_uid="tenants.lifecycle.membership-removed")
