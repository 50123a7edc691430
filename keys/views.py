"""Key registration pages. Thin: resolve access, validate a form, call one service."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path

from environments.selectors import get_environment_for_user


def registration_new(request: HttpRequest, environment_id) -> HttpResponse:
    environment, membership = get_environment_for_user(request.user, environment_id)
    if not membership.can_change:
        return render(request, "403.html", status=403)
    raise NotImplementedError


urlpatterns = [
    path("environments/<uuid:environment_id>/keys/new/", registration_new, name="registration_new"),
]
