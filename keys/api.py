"""The data-plane API (JSON over HTTP): /api/v1/environments/{environment_id}/records/..."""

urlpatterns: list = []
