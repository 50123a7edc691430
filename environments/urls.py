from django.urls import path

from . import account_views, views

urlpatterns = [
    path("", views.home, name="home"),
    path("environments/new/", views.environment_new, name="environment_new"),
    path("environments/<uuid:environment_id>/", views.environment_detail, name="environment_detail"),
    path("organizations/new/", views.organization_new, name="organization_new"),
    path("organizations/<int:organization_id>/settings/", views.organization_settings, name="organization_settings"),
    path("accounts/two-factor/", account_views.two_factor_page, name="two_factor"),
    path("accounts/two-factor/verify/", account_views.two_factor_verify, name="two_factor_verify"),
    path("accounts/two-factor/qr.svg", account_views.two_factor_qr, name="two_factor_qr"),
    path("accounts/two-factor/recovery-codes/", account_views.two_factor_recovery_codes, name="two_factor_recovery_codes"),
    path("accounts/two-factor/remove/", account_views.two_factor_remove, name="two_factor_remove"),
    path("accounts/password/", account_views.PasswordChangeView.as_view(), name="password_change"),
]
