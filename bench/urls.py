"""Bench-only URLs: the portal's, plus /bench/hello and /bench/stats."""

from django.urls import path

from portal.urls import urlpatterns as portal_urlpatterns

from . import views

urlpatterns = [
    path("bench/hello", views.hello),
    path("bench/stats", views.stats),
    *portal_urlpatterns,
]
