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

        # Clients identified by a metadata document URL obey the registration's redirect URI rules.
        pre_save.connect(_refuse_rule_breaking_metadata_document, sender=get_application_model(),
                         dispatch_uid="tenants.oauth.metadata-document-redirect-uris")
        # A new password, or a membership removed, ends the person's OAuth grants (JWTs end by
        # themselves: tenants/authentication.py).
        post_save.connect(password_changed, sender=get_user_model(), dispatch_uid="tenants.lifecycle.password-changed")
        post_delete.connect(membership_removed, sender=Membership, dispatch_uid="tenants.lifecycle.membership-removed")


def _refuse_rule_breaking_metadata_document(sender, instance, **kwargs):
    """tenants.oauth.refuse_rule_breaking_metadata_document, imported when an OAuth application is
    saved: tenants.oauth loads DOT's views and oauthlib, which `mcp_stdio` and the workers never
    use (mcp_stdio's start, user CPU to exit, median of 12: 1.66 -> 1.54 s)."""
    from tenants.oauth import refuse_rule_breaking_metadata_document

    return refuse_rule_breaking_metadata_document(sender, instance, **kwargs)
