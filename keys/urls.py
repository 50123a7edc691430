from django.urls import path

from . import views

urlpatterns = [
    path("environments/<uuid:environment_id>/keys/new/", views.registration_new, name="registration_new"),
]
