"""API key pages and the \"Try it\" page of an environment."""

urlpatterns: list = []
