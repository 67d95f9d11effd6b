from django.urls import path

from control import views

app_name = "control"

urlpatterns = [
    path("control/approvals/", views.ApprovalsView.as_view(), name="approvals"),
]
