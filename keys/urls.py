"""Portal pages of the keys app. Each views module declares its own ``urlpatterns``."""

from . import apikey_views, lifecycle_views, validation_views, version_views, views

urlpatterns = (
    views.urlpatterns + validation_views.urlpatterns + apikey_views.urlpatterns + lifecycle_views.urlpatterns
    + version_views.urlpatterns
)
