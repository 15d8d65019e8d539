"""What ends a person's OAuth access (docs/security.md, "Credential lifecycle").

JWTs need nothing here: they carry fingerprints of the password and the memberships and are
refused at their next use (tenants/authentication.py). OAuth tokens are rows of
django-oauth-toolkit, checked against the membership at every use; a refresh token would still
mint access tokens, which would work again the day the person is added back. So:

- a new password (set_password: the admin, `manage.py changepassword`, the password change page)
  or an unusable one revokes every OAuth refresh token, access token and pending authorization
  code of the person, in every tenant; Django upgrading a password's hash at a sign-in does not;
- a membership removed (the admin, a tenant deleted) revokes the person's OAuth tokens and codes
  for that tenant.

A role change ends no OAuth grant: the MCP door reads the role from the membership at every
request. API keys belong to the tenant, not to the person who created them (`createdBy` records
who): they stay when that person leaves, until an owner or admin revokes them.
"""

from oauth2_provider.models import get_access_token_model, get_grant_model, get_refresh_token_model


def _in_tenant(scope, slug):
    return slug is None or f"tenant:{slug}" in (scope or "").split()


def end_oauth_access(user, tenant_slug=None):
    """Revoke `user`'s OAuth refresh and access tokens and delete their pending authorization codes,
    all of them or only those of the tenant `tenant_slug`. Returns how many grants ended."""
    ended = 0
    for token in get_access_token_model().objects.filter(user=user).select_related("refresh_token"):
        if _in_tenant(token.scope, tenant_slug):
            refresh = getattr(token, "refresh_token", None)
            (refresh or token).revoke()  # a refresh token's revoke removes its access token too
            ended += 1
    # A live refresh token whose access token is gone (cleaned up) can no longer name its tenant.
    for refresh in get_refresh_token_model().objects.filter(user=user, revoked__isnull=True, access_token__isnull=True):
        refresh.revoke()
        ended += 1
    for grant in get_grant_model().objects.filter(user=user):
        if _in_tenant(grant.scope, tenant_slug):
            grant.delete()
            ended += 1
    return ended


def password_changed(sender, instance, created, update_fields=None, **kwargs):
    """post_save of the user model."""
    if created or (update_fields is not None and "password" not in update_fields):
        return
    # set_password() leaves the new raw password in _password until save() has run (Django
    # resets it to None for a hash upgrade at sign-in, which is no password change).
    if getattr(instance, "_password", None) is not None or not instance.has_usable_password():
        end_oauth_access(instance)


def membership_removed(sender, instance, **kwargs):
    """post_delete of Membership."""
    end_oauth_access(instance.user, instance.tenant.slug)
