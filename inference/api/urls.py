from django.urls import path

from facility.api.routers import SimpleRouter
from inference.api import views

router = SimpleRouter(trailing_slash=False)
router.register("inference/model-versions", views.ModelVersionViewSet)

urlpatterns = [
    path("inference/forecasts", views.ForecastView.as_view(), name="inference-forecasts"),
    *router.urls,
]
