"""App pages at /apps/<tenant>/<app id>/<page path>, for the tenant's members (or anyone, read-only,
when the app is public). Another tenant's app does not exist for you: 404."""

from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from backflow.csp import content_security_policy
from entities_app.models import App
from entities_app.pages import FormErrors, component_view, submit_form
from tenants.principals import Principal
from tenants.selectors import membership_get, tenant_get


def _member_principal(request, tenant):
    user = request.user
    if not user.is_authenticated:
        return None
    membership = membership_get(tenant=tenant, user=user)
    if membership is None:
        return None
    return Principal(tenant=tenant, label=f"user:{user.get_username()}", user=user, role=membership.role)


# Markdown components may show images from the web (https); nothing else leaves the site.
@content_security_policy(img_src=["https:"])
@require_http_methods(["GET", "POST"])
def app_page(request, tenant_slug, app_slug, page_path=""):
    tenant = tenant_get(slug=tenant_slug)
    app = App.objects.for_tenant(tenant).filter(slug=app_slug).first() if tenant and tenant.is_active else None
    member = _member_principal(request, tenant) if app else None
    if app is None or (member is None and not app.public):
        # Visitors are asked to sign in whether or not the app exists, so the answer tells nothing.
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        raise Http404("No such app.")
    page = app.page(page_path.strip("/"))
    if page is None:
        raise Http404("No such page.")

    form_errors, status = None, 200
    if request.method == "POST":
        if member is None:
            raise Http404("Sign in as a member to submit forms.")
        index = request.POST.get("_component", "")
        component = page["components"][int(index)] if index.isdigit() and int(index) < len(page["components"]) else None
        if component is None or component["type"] != "form":
            raise Http404("No such form.")
        try:
            entity = submit_form(tenant, member, component, int(index), request.POST)
            return HttpResponseRedirect(f"{request.path}?created={entity.id}")
        except FormErrors as exc:
            form_errors, status = exc, 400

    components = [component_view(tenant, component, index, request.GET) for index, component in enumerate(page["components"])]
    if form_errors:  # show the form again with what was typed
        for field in components[form_errors.index].get("fields", []):
            field["value"] = form_errors.values.get(field["name"], "")
    return render(request, "entities_app/page.html", {
        "tenant": tenant, "app": app, "page": page, "components": components, "member": member,
        "form_errors": form_errors, "created": request.GET.get("created"),
        "nav": [(p["title"] or p["path"] or app.name, f"/apps/{tenant.slug}/{app.slug}/{p['path']}") for p in app.pages],
    }, status=status)
