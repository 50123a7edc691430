"""Pages for organizations and environments. Thin: resolve access, validate, call a service."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from environments import selectors, two_factor
from environments.forms import EnvironmentForm, OrganizationForm, OrganizationSettingsForm
from environments.models import Membership
from environments.services import EnvironmentNameTaken, OrganizationNameTaken, environment_create, organization_create
from keys.selectors import active_versions_by_environment, environment_overview


@login_required
@require_http_methods(["GET", "HEAD"])
def home(request: HttpRequest) -> HttpResponse:
    memberships = list(selectors.memberships_for_user(request.user))
    environments = list(selectors.environments_for_user(request.user))
    active = active_versions_by_environment(environments)
    by_org: dict[int, list] = {}
    for environment in environments:
        environment.active_version = active.get(environment.pk)
        by_org.setdefault(environment.organization_id, []).append(environment)
    rows = [(m, by_org.get(m.organization_id, [])) for m in memberships]
    can_create = any(m.can_change for m in memberships)
    return render(request, "environments/home.html", {"rows": rows, "can_create": can_create})


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def environment_new(request: HttpRequest) -> HttpResponse:
    organizations = selectors.organizations_for_user(request.user, can_change=True)
    if not organizations.exists():
        if not selectors.memberships_for_user(request.user).exists():
            # Not in any organization yet: an environment needs one first.
            return redirect("organization_new")
        # Viewers may look but not change: same answer as for any forbidden change.
        raise PermissionDenied("Only owners and admins create environments.")
    form = EnvironmentForm(request.POST or None, organizations=organizations)
    if request.method == "POST" and form.is_valid():
        try:
            environment = environment_create(
                organization=form.cleaned_data["organization"],
                name=form.cleaned_data["name"],
                actor=request.user,
            )
        except EnvironmentNameTaken as e:
            form.add_error("name", str(e))
        else:
            messages.success(request, f"Environment “{environment.name}” created with a platform-managed key.")
            return redirect("environment_detail", environment_id=environment.public_id)
    return render(request, "environments/environment_new.html", {"form": form})


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def organization_new(request: HttpRequest) -> HttpResponse:
    """A signed-in user who belongs to no organization creates one and becomes its owner.

    Members of an organization are sent home: they are added to more by an owner (or
    by ``manage.py create_owner``), so one account cannot spawn organizations at will.
    """
    if selectors.memberships_for_user(request.user).exists():
        return redirect("home")
    form = OrganizationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            organization = organization_create(name=form.cleaned_data["name"], owner=request.user)
        except OrganizationNameTaken as e:
            form.add_error("name", str(e))
        else:
            messages.success(request, f"Organization “{organization.name}” created; you are its owner.")
            return redirect("home")
    return render(request, "environments/organization_new.html", {"form": form})


@login_required
@require_http_methods(["GET", "HEAD"])
def environment_detail(request: HttpRequest, environment_id) -> HttpResponse:
    environment, membership = selectors.get_environment_for_user(request.user, environment_id)
    context = {"environment": environment, "membership": membership}
    context.update(environment_overview(environment=environment))
    return render(request, "environments/environment_detail.html", context)


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def organization_settings(request: HttpRequest, organization_id: int) -> HttpResponse:
    """Owners: the organization's security settings. Members of other roles: 403."""
    organization, membership = selectors.get_organization_for_user(
        request.user, organization_id, requirement=Membership.OWN
    )
    # Not ``request.POST or None``: unticking the only checkbox posts an empty form.
    form = OrganizationSettingsForm(
        request.POST if request.method == "POST" else None,
        initial={"require_two_factor": organization.require_two_factor},
    )
    if request.method == "POST" and form.is_valid():
        wanted = form.cleaned_data["require_two_factor"]
        try:
            two_factor.organization_set_policy(organization=organization, require_two_factor=wanted, request=request)
        except two_factor.TwoFactorError as e:
            form.add_error("require_two_factor", str(e))
        else:
            state = "now requires" if wanted else "no longer requires"
            messages.success(request, f"{organization.name} {state} two-factor authentication for owners and admins.")
            return redirect("organization_settings", organization_id=organization.pk)
    members = selectors.members_with_two_factor(organization)
    return render(
        request,
        "environments/organization_settings.html",
        {"organization": organization, "membership": membership, "form": form, "members": members},
    )
