from rest_framework.routers import DefaultRouter

from facility.api import views

router = DefaultRouter()
router.register("sites", views.SiteViewSet)
router.register("halls", views.HallViewSet)
router.register("cooling-loops", views.CoolingLoopViewSet)
router.register("cooling-units", views.CoolingUnitViewSet)
router.register("racks", views.RackViewSet)
router.register("nodes", views.NodeViewSet)
router.register("gpus", views.GPUViewSet)
router.register("setpoints", views.SetpointViewSet)

urlpatterns = router.urls
