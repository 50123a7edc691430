from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from . import metrics_view, views

# A database outage on a page is a 503, not a bug report (portal.views.server_error).
handler500 = "portal.views.server_error"

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("metrics", metrics_view.metrics_view, name="metrics"),
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("", include("keys.urls")),
    path("", include("environments.urls")),
]
