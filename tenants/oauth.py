"""OAuth 2.1 for remote MCP, on django-oauth-toolkit: authorization code + PKCE (S256), refresh
rotation, revocation, dynamic client registration, RFC 8414 / 9728 metadata, RFC 8707 audience.

A grant belongs to one tenant: the consent page adds the scope `tenant:<slug>` for the tenant
the member picks, so the tenant travels with the grant, its access tokens and their refreshes,
and the MCP door reads it back (re-checking the membership on every request).
"""

import hashlib
import ipaddress
import re
import unicodedata
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.utils.decorators import method_decorator
from oauth2_provider.cimd import CIMDError
from oauth2_provider.exceptions import FatalClientError, OAuthToolkitError
from oauth2_provider.models import get_access_token_model, get_application_model
from oauth2_provider.scopes import BaseScopes
from oauth2_provider.settings import oauth2_settings
from oauth2_provider.views import (
    AuthorizationView,
    DynamicClientRegistrationManagementView,
    DynamicClientRegistrationView,
    OAuthProtectedResourceMetadataView,
)
from oauth2_provider.views import TokenView as DotTokenView
from oauthlib.oauth2.rfc6749.errors import CustomOAuth2Error, InvalidRedirectURIError

from backflow.csp import allow_form_action, content_security_policy
from backflow.jsonbody import JsonBodyError, parse_json
from backflow.ratelimit import retry_after
from tenants.client_address import client_address
from tenants.models import Membership
from tenants.principals import Principal
from tenants.scopes import ALL_SCOPES

TENANT_SCOPE = "tenant:"
MCP_RESOURCE_PATH = "/mcp"
SCOPE_DESCRIPTIONS = {
    "integrations:read": "See integrations and secrets' names",
    "integrations:write": "Create, change and delete integrations and secrets",
    "routes:read": "See API routes",
    "routes:write": "Create, change and delete API routes",
    "workflows:read": "See workflows, runs and MCP servers",
    "workflows:write": "Create, change and delete workflows and MCP servers",
    "workflows:run": "Run workflows",
    "apps:read": "See apps",
    "apps:write": "Create, change and delete apps",
    "entities:read": "Read collections and entities",
    "entities:write": "Create, change and delete entities",
    "mcp:use": "Use the tenant's external MCP servers",
}


class OAuthError(Exception):
    """The OAuth token cannot be used here; the message says why (HTTP 401)."""


class TenantScopes(BaseScopes):
    """Our key scopes, plus `tenant:<slug>` for each tenant the signed-in member belongs to."""

    def get_all_scopes(self):
        return dict(SCOPE_DESCRIPTIONS)

    def get_available_scopes(self, application=None, request=None, *args, **kwargs):
        user = getattr(request, "user", None)
        tenants = []
        if user is not None and getattr(user, "is_authenticated", False):
            tenants = [f"{TENANT_SCOPE}{slug}" for slug in Membership.all_tenants.filter(user=user, tenant__is_active=True).values_list("tenant__slug", flat=True)]
        return list(ALL_SCOPES) + tenants

    def get_default_scopes(self, application=None, request=None, *args, **kwargs):
        return list(ALL_SCOPES)


def public_base(request):
    """https://host of this deployment: BACKFLOW_PUBLIC_URL behind a proxy, else the request's."""
    if settings.BACKFLOW_PUBLIC_URL:
        return settings.BACKFLOW_PUBLIC_URL.rstrip("/")
    return f"{request.scheme}://{request.get_host()}"


def mcp_resource(base):
    return base + MCP_RESOURCE_PATH


def foreign_resource(request, resources):
    """The first resource indicator (RFC 8707) among `resources` that /mcp would refuse a token
    for, and the description of the `invalid_target` error it earns; (None, None) when all are
    ours. "Ours" is what the resource server accepts: the MCP endpoint or a URL prefix of it."""
    ours = mcp_resource(public_base(request))
    for resource in resources:
        if not oauth2_settings.RESOURCE_SERVER_TOKEN_RESOURCE_VALIDATOR(ours, [resource]):
            return resource, f"This server issues tokens for {ours} only, not {resource[:200]!r}; ask with resource={ours}."
    return None, None


@method_decorator(content_security_policy, name="dispatch")
class ConsentView(AuthorizationView):
    """Sign-in and consent: the member picks the tenant and may narrow the requested scopes.

    The page carries a strict Content-Security-Policy whose form-action names this site and the
    origin of the request's (checked) redirect URI, where the answer sends the browser. A
    dynamically registered client (DCR or a client ID metadata document) whose registered redirect
    URIs break the registration rules (rows from before the rules, or a metadata document that
    changed) gets an error page, never a redirect."""

    template_name = "oauth2_provider/authorize.html"

    def validate_authorization_request(self, request):
        scopes, credentials = super().validate_authorization_request(request)
        self._refuse_rule_breaking_client(credentials.get("client_id"))
        resource, problem = foreign_resource(request, request.GET.getlist("resource"))
        if resource is not None:  # the redirect URI is checked by now: the client hears why
            raise OAuthToolkitError(error=CustomOAuth2Error(error="invalid_target", description=problem,
                                                            state=credentials.get("state")),
                                    redirect_uri=credentials["redirect_uri"])
        return scopes, credentials

    @staticmethod
    def _refuse_rule_breaking_client(client_id):
        application = get_application_model().objects.filter(client_id=client_id or "").first()
        problem = registered_redirect_uris_problem(application) if application is not None else None
        if problem:
            raise FatalClientError(error=InvalidRedirectURIError(
                description=f"This client's registered redirect URIs break the registration rules ({problem}); "
                            "it must register again."))

    def render_to_response(self, context, **response_kwargs):
        response = super().render_to_response(context, **response_kwargs)
        application, form = context.get("application"), context.get("form")
        uri = self.oauth2_data.get("redirect_uri")
        if not uri and form is not None and form.is_bound:
            uri = form.data.get("redirect_uri")
        if "error" not in context and application is not None and uri and application.redirect_uri_allowed(uri):
            allow_form_action(response, uri)
        return response

    def get(self, request, *args, **kwargs):
        # The tenant is picked on this page, so it is always shown: no silent approval_prompt=auto
        # (which would issue a grant bound to no tenant).
        if "approval_prompt" in request.GET:
            request.GET = request.GET.copy()
            del request.GET["approval_prompt"]
        return super().get(request, *args, **kwargs)

    def _memberships(self):
        return list(Membership.all_tenants.filter(user=self.request.user, tenant__is_active=True).select_related("tenant"))

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        form = context.get("form")
        if "application" not in context and form is not None and form.is_bound:
            # Shown again after a refused POST: the request's details are in the form's hidden fields.
            context["application"] = get_application_model().objects.filter(client_id=form.data.get("client_id", "")).first()
            requested = (form.data.get("scope") or "").split()
        else:
            requested = self.oauth2_data.get("scope") or self.oauth2_data.get("scopes") or []
        redirect_uri = self.oauth2_data.get("redirect_uri") if hasattr(self, "oauth2_data") else None
        if not redirect_uri and form is not None and form.is_bound:
            redirect_uri = form.data.get("redirect_uri")
        context.update(
            memberships=self._memberships(),
            requested_scopes=[(s, SCOPE_DESCRIPTIONS[s]) for s in requested if s in SCOPE_DESCRIPTIONS],
            client=describe_client(context.get("application"), redirect_uri),
        )
        return context

    def form_valid(self, form):
        if not get_application_model().objects.filter(client_id=form.cleaned_data.get("client_id") or "").exists():
            error = {"error": "invalid_client", "description": "Unknown client."}  # a tampered form
            return self.render_to_response(self.get_context_data(form=form, error=error), status=400)
        try:
            self._refuse_rule_breaking_client(form.cleaned_data.get("client_id"))
        except FatalClientError as exc:
            error = {"error": exc.oauthlib_error.error, "description": exc.oauthlib_error.description}
            return self.render_to_response(self.get_context_data(form=form, error=error), status=400)
        resource, problem = foreign_resource(self.request, (form.cleaned_data.get("resource") or "").split())
        if resource is not None:  # a tampered form: the GET refused it already
            return self.render_to_response(self.get_context_data(form=form, error={"error": "invalid_target", "description": problem}), status=400)
        # A client that names no resource gets a token for the MCP endpoint, the only place it works.
        form.cleaned_data["resource"] = form.cleaned_data.get("resource") or mcp_resource(public_base(self.request))
        if form.cleaned_data.get("allow"):
            slug = self.request.POST.get("tenant", "")
            if slug not in {m.tenant.slug for m in self._memberships()}:
                form.add_error(None, "Pick one of your tenants.")
                return self.form_invalid(form)
            requested = set((form.cleaned_data.get("scope") or "").split()) & set(ALL_SCOPES)
            chosen = [s for s in self.request.POST.getlist("scopes") if s in requested]
            form.cleaned_data["scope"] = " ".join([*chosen, f"{TENANT_SCOPE}{slug}"])
        return super().form_valid(form)


# Names of well-known MCP clients and their makers, squashed (see squash_name). A self-registered
# client whose name holds one of them is marked unverified on the consent page: any program can
# register as "Claude". Short ones must be the whole name (as substrings they would catch words).
WELL_KNOWN_CLIENTS = {
    "claude": "Claude", "anthropic": "Anthropic", "chatgpt": "ChatGPT", "openai": "OpenAI", "codex": "Codex",
    "cursor": "Cursor", "vscode": "VS Code", "visualstudio": "Visual Studio", "githubcopilot": "GitHub Copilot",
    "copilot": "Copilot", "github": "GitHub", "microsoft": "Microsoft", "gemini": "Gemini", "google": "Google",
    "windsurf": "Windsurf", "codeium": "Codeium", "perplexity": "Perplexity", "mistral": "Mistral",
    "lechat": "Le Chat", "jetbrains": "JetBrains", "zed": "Zed", "cline": "Cline", "goose": "Goose",
    "mcpinspector": "MCP Inspector", "backflow": "Backflow",
}
SHORT_NAME = 6  # names shorter than this match only the whole squashed name
# Letters that look like Latin ones (Cyrillic, Greek) and digits standing in for letters.
LOOKALIKES = str.maketrans({
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t",
    "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "ɡ": "g", "ԛ": "q", "ԝ": "w", "ӏ": "l",
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u",
    "χ": "x", "γ": "y", "ϲ": "c", "ℓ": "l", "ı": "i",
    "0": "o", "1": "l", "3": "e", "4": "a", "5": "s", "7": "t", "$": "s", "@": "a", "|": "l", "!": "i",
})


def squash_name(name):
    """`name` as it reads: compatibility forms folded (full-width, ligatures, styled letters),
    accents dropped, case folded, lookalike letters and digits mapped to the Latin letter they
    imitate, and everything but a-z removed (spaces, dots, dashes, zero-width characters)."""
    text = unicodedata.normalize("NFKD", str(name or ""))
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold().translate(LOOKALIKES)
    return re.sub(r"[^a-z]", "", text)


def impersonated_client(name):
    """The well-known client `name` looks like, or None."""
    squashed = squash_name(name)
    if not squashed:
        return None
    for known, label in WELL_KNOWN_CLIENTS.items():
        if squashed == known or (len(known) >= SHORT_NAME and known in squashed):
            return label
    # "cl aude" with an "l" for an "I" and the like: also compare with l and i as one letter.
    folded = squashed.replace("i", "l")
    for known, label in WELL_KNOWN_CLIENTS.items():
        known_folded = known.replace("i", "l")
        if folded == known_folded or (len(known) >= SHORT_NAME and known_folded in folded):
            return label
    return None


def describe_client(application, redirect_uri):
    """What the consent page says about the client: its self-chosen name, whether it registered
    itself (and so whether anyone vouches for the name), a well-known name it imitates, and the
    host the answer goes to."""
    if application is None:
        return None
    sources = application.RegistrationSource
    self_registered = application.registration_source in (sources.DCR, sources.CIMD)
    host = ""
    if redirect_uri:
        try:
            parts = urlsplit(redirect_uri)
            host = parts.netloc.rpartition("@")[2] or redirect_uri
        except ValueError:
            host = redirect_uri
    document_host = ""
    if application.registration_source == sources.CIMD:
        try:
            document_host = urlsplit(application.client_id).netloc
        except ValueError:
            document_host = application.client_id
    name = application.name or application.client_id
    return {
        "name": name,
        "self_registered": self_registered,
        "metadata_document": application.registration_source == sources.CIMD,
        "document_host": document_host,
        "registered": application.created,
        "imitates": impersonated_client(name) if self_registered else None,
        "redirect_host": host,
    }


def _is_loopback(host):
    """localhost or a loopback IP address (not any name that merely starts with "127.")."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


# RFC 3986's characters (unreserved, reserved and "%"): anything else has to be percent-encoded.
URI_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")
HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*")
REDIRECT_RULE = "use one absolute https URI (or http on a loopback address) per element, without a fragment"


def redirect_uri_problem(uri):
    """Why `uri` cannot be a redirect URI of a dynamically registered client, or None.

    One absolute URI: no whitespace or control characters (django-oauth-toolkit stores a client's
    redirect URIs space-separated, so "https://good/cb http://evil/cb" would become two), only
    RFC 3986 characters, a host name or IP literal, no user name or password, no fragment; https,
    or http on a loopback address (native apps, RFC 8252)."""
    if not isinstance(uri, str) or not uri:
        return "each redirect URI must be a non-empty string"
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in uri):
        return "one URI per element: no spaces, tabs, line breaks or other control characters"
    if not URI_CHARACTERS.fullmatch(uri):
        return "only the characters RFC 3986 allows in a URI (percent-encode the others)"
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number in range)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return "not a valid URI"
    if "#" in uri:
        return "no fragment (#...) is allowed"
    if "@" in parts.netloc:
        return "no user name or password is allowed"
    host = parts.hostname
    if not host or "%" in host or not (HOST_NAME.fullmatch(host) or _is_ip_literal(host)):
        return "an absolute URI with a host name or IP address is required"
    if not (parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(host))):
        return "use https, or http on a loopback address"
    return None


def _is_ip_literal(host):
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def registered_redirect_uris_problem(application):
    """What is wrong with a dynamically registered (DCR or metadata document) client's stored
    redirect URIs, or None (also for clients an operator created, which are theirs to judge)."""
    sources = application.RegistrationSource
    if application.registration_source not in (sources.DCR, sources.CIMD):
        return None
    for uri in (application.redirect_uris or "").split():
        problem = redirect_uri_problem(uri)
        if problem:
            return f"{uri!r}: {problem}"
    return None


def _redirect_uri_error(body):
    """The RFC 7591 error response for registration metadata that is not acceptable JSON (too deep,
    NaN, a lone surrogate: DOT's own parse crashed on a deep body, and stored the others) or whose
    redirect URIs break the rules (see redirect_uri_problem), or None when they are fine."""
    try:
        data = parse_json(body or b"{}")
    except JsonBodyError as exc:
        return JsonResponse({"error": "invalid_client_metadata", "error_description": f"The body is not acceptable JSON: {exc}"},
                            status=400)
    if not isinstance(data, dict) or "redirect_uris" not in data:
        return None
    uris = data["redirect_uris"]
    if not isinstance(uris, list):
        return JsonResponse({"error": "invalid_client_metadata",
                             "error_description": "redirect_uris must be an array of URI strings."}, status=400)
    for index, uri in enumerate(uris):
        problem = redirect_uri_problem(uri)
        if problem:
            return JsonResponse({"error": "invalid_redirect_uri",
                                 "error_description": f"redirect_uris[{index}] {uri!r}: {problem} ({REDIRECT_RULE})."},
                                status=400)
    return None


def refuse_rule_breaking_metadata_document(sender, instance, **kwargs):
    """pre_save of DOT's Application: a client identified by the URL of its metadata document
    (CIMD) obeys the same redirect URI rules as a registered one. DOT builds and saves the
    application itself; CIMDError is its own "invalid document" error: the client stays unknown
    (the authorization endpoint shows an error page, nothing is stored). DOT has joined the
    document's list with spaces by then, so each URI in it is judged on its own."""
    if instance.registration_source != sender.RegistrationSource.CIMD:
        return
    for uri in (instance.redirect_uris or "").split():
        problem = redirect_uri_problem(uri)
        if problem:
            raise CIMDError(f"client metadata document {instance.client_id!r}: redirect URI {uri!r}: {problem}")


class RegistrationView(DynamicClientRegistrationView):
    """RFC 7591 registration, open to anyone but rate-limited per address; redirect URIs must be
    https, or http on a loopback address (native apps)."""

    def post(self, request, *args, **kwargs):
        wait = retry_after(f"oauth-register:{client_address(request)}", settings.BACKFLOW_OAUTH_REGISTRATION_RATE_LIMIT,
                           name="oauth_registration")
        if wait:
            response = JsonResponse({"error": "slow_down", "error_description": f"Too many registrations; retry in {wait} s."}, status=429)
            response["Retry-After"] = str(wait)
            return response
        return _redirect_uri_error(request.body) or super().post(request, *args, **kwargs)


class RegistrationManagementView(DynamicClientRegistrationManagementView):
    """RFC 7592 client configuration: an update obeys the same redirect URI rules as registration."""

    def put(self, request, client_id, *args, **kwargs):
        auth = self._authenticate_registration_request(request, client_id)
        if isinstance(auth, HttpResponse):
            return auth
        return _redirect_uri_error(request.body) or super().put(request, client_id, *args, **kwargs)


def _token_error(error, description, status=400):
    response = JsonResponse({"error": error, "error_description": description}, status=status)
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    return response


class TokenView(DotTokenView):
    """The token endpoint, for the grant types the server supports only (authorization_code,
    refresh_token: OAUTH2_GRANT_TYPES_SUPPORTED). Any other grant type is refused before any
    credential is looked at: oauthlib checks a password grant's username and password before it
    refuses the grant type, so the answer (invalid_grant or unauthorized_client) told a right
    password from a wrong one, without any limit."""

    def post(self, request, *args, **kwargs):
        supported = oauth2_settings.OAUTH2_GRANT_TYPES_SUPPORTED
        asked = request.GET.getlist("grant_type") + request.POST.getlist("grant_type")
        refused = next((grant for grant in asked or [""] if grant not in supported), None)
        if refused is not None:  # as oauthlib answers a missing one
            return _token_error("unsupported_grant_type",
                                f"Grant type {refused[:100]!r} is not supported here; use one of: {', '.join(supported)}.")
        resource, problem = foreign_resource(request, request.GET.getlist("resource") + request.POST.getlist("resource"))
        if resource is not None:
            return _token_error("invalid_target", problem)
        return super().post(request, *args, **kwargs)


class McpResourceMetadataView(OAuthProtectedResourceMetadataView):
    """RFC 9728 metadata of the MCP endpoint (at /.well-known/oauth-protected-resource[/mcp])."""

    def get_resource(self, request):
        return mcp_resource(public_base(request))

    def get_authorization_servers(self, request):
        return [public_base(request)]


def principal_for_oauth_token(raw, audience, requested_tenant=None):
    """The principal of a live access token issued for `audience` (the MCP resource). Without an
    audience (REST, tenant routes), a live token is told where it works, and anything else is just
    an unknown credential."""
    token = (get_access_token_model().objects.select_related("user", "application")
             .filter(token_checksum=hashlib.sha256(raw.encode()).hexdigest()).first())
    live = token is not None and not token.is_expired()
    if audience is None:
        raise OAuthError("OAuth access tokens are issued for the MCP endpoint only; use an API key or a JWT here."
                         if live else "Invalid, expired or revoked token.")
    if not live:
        raise OAuthError("Invalid, expired or revoked access token.")
    if not token.resource or not token.allows_audience(audience):
        raise OAuthError(f"This access token was not issued for {audience}; request it with resource={audience}.")
    scopes = token.scope.split()
    tenants = [s[len(TENANT_SCOPE):] for s in scopes if s.startswith(TENANT_SCOPE)]
    if len(tenants) != 1 or (requested_tenant and requested_tenant != tenants[0]):
        raise OAuthError("This access token is not valid for that tenant.")
    membership = Membership.all_tenants.filter(user=token.user, tenant__slug=tenants[0], user__is_active=True).select_related("tenant").first()
    if membership is None:
        raise OAuthError("The person who approved this access is no longer a member of the tenant.")
    return Principal(
        tenant=membership.tenant, label=f"oauth:{token.application.client_id[:12]}:{token.user.get_username()}",
        scopes=frozenset(s for s in scopes if s in ALL_SCOPES), user=token.user, role=membership.role,
    )
