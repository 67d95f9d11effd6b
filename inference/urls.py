"""Operator pages of the inference app (mounted at the site root)."""

from django.urls import path

from inference import views

app_name = "inference"

urlpatterns = [
    path("models/", views.ModelPage.as_view(), name="models"),
    path("models/data", views.ModelDataView.as_view(), name="model-data"),
]
