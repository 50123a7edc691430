"""Bench-only URLconf of the lean /api/ handler: the baselines (bench/api_views.py), then
the data-plane API (portal/api_urls.py)."""

from django.urls import path

from portal.api_urls import urlpatterns as api_urlpatterns

from . import api_views

urlpatterns = [
    path("api/bench/hello", api_views.hello),
    path("api/bench/select/<str:record_key>", api_views.select),
    path("api/bench/upsert/<str:record_key>", api_views.upsert),
    *api_urlpatterns,
]
