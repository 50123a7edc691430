from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("environments/new/", views.environment_new, name="environment_new"),
    path("environments/<uuid:environment_id>/", views.environment_detail, name="environment_detail"),
]
