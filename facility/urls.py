from django.urls import path

from facility import views

app_name = "facility"

urlpatterns = [
    path("", views.OverviewView.as_view(), name="overview"),
    path("account/api-tokens/", views.ApiTokensView.as_view(), name="api-tokens"),
]
