from control.api import policy_runs, views
from facility.api.routers import SimpleRouter

router = SimpleRouter()  # facility.api.urls serves the API root
router.register("setpoint-changes", views.SetpointChangeViewSet)
router.register("audit-entries", views.AuditEntryViewSet)
router.register("policy-runs", policy_runs.PolicyRunViewSet)

urlpatterns = router.urls
