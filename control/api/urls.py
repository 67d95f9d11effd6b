from rest_framework.routers import SimpleRouter

from control.api import views

router = SimpleRouter()  # facility.api.urls serves the API root
router.register("setpoint-changes", views.SetpointChangeViewSet)
router.register("audit-entries", views.AuditEntryViewSet)

urlpatterns = router.urls
