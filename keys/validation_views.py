"""Validation pages and actions (validate again, activate, live status)."""

urlpatterns: list = []
