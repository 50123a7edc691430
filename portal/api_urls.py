"""The URLconf of the lean ``/api/`` handler (``portal.handlers.ApiHandler``,
``settings.API_URLCONF``): the data-plane API and a JSON 404 for anything else under /api/."""

from django.urls import include, path, re_path

from keys.api import views as api

urlpatterns = [
    path("api/v1/", include("keys.api.views")),
    re_path(r"^api/", api.unknown_path, name="api_outside_v1"),
    # Look-alikes that portal.handlers.route sends here too (//api/…, /./api/…, /API/…):
    # the same JSON 404, never Django's HTML one (whose log line carries the path).
    re_path(r"", api.unknown_path),
]
