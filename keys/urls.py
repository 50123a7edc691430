"""Portal pages of the keys app. Each views module declares its own ``urlpatterns``."""

from keys.views import api_keys, lifecycle, registration, try_it, validation, versions

urlpatterns = (
    registration.urlpatterns
    + validation.urlpatterns
    + api_keys.urlpatterns
    + try_it.urlpatterns
    + lifecycle.urlpatterns
    + versions.urlpatterns
)
