from facility.api import views
from facility.api.routers import DefaultRouter

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
