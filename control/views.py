"""The approvals page: pending setpoint changes with their rationale and predicted effect, approve/deny forms."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.views.generic import TemplateView

from control import changes
from control.models import AuditEntry, ChangeState, ControllerPause, SetpointChange
from facility.mixins import RoleRequiredMixin

_SELECT = ("setpoint__cooling_unit__site", "proposed_by", "decided_by")


class ApprovalsView(RoleRequiredMixin, TemplateView):
    """Every role sees the queue; only approvers get the forms, and never for a change they proposed."""

    template_name = "control/approvals.html"
    permission_required = "control.view_setpointchange"

    def get_context_data(self, **kwargs):
        user = self.request.user
        pending = list(SetpointChange.objects.filter(state=ChangeState.PENDING).select_related(*_SELECT)
                       .order_by("expires_at"))
        can_approve = user.has_perm("control.approve_setpointchange")
        for change in pending:
            change.own = change.proposed_by_id == user.pk
            change.can_decide = can_approve and not change.own
            change.can_cancel = change.own or can_approve
        recent = (SetpointChange.objects.exclude(state=ChangeState.PENDING).select_related(*_SELECT)
                  .order_by("-updated_at")[:20])
        return super().get_context_data(
            pending=pending, recent=recent, can_approve=can_approve,
            paused=ControllerPause.objects.filter(paused=True).select_related("site"),
            audit=AuditEntry.objects.all()[:15], **kwargs,
        )

    def post(self, request, *args, **kwargs):
        decision = request.POST.get("decision")
        services = {"approve": changes.approve, "deny": changes.deny, "cancel": changes.cancel}
        if decision not in services:
            messages.error(request, "Unknown decision.")
            return redirect("control:approvals")
        if decision != "cancel" and not request.user.has_perm("control.approve_setpointchange"):
            raise PermissionDenied("Approving and denying setpoint changes is for approvers.")
        try:
            change_id = int(request.POST.get("change", ""))
        except ValueError:
            messages.error(request, "No change named.")
            return redirect("control:approvals")
        try:
            change = services[decision](change_id, request.user, request.POST.get("comment", "").strip()[:2000])
        except changes.ControlError as exc:
            if exc.status == 403:
                raise PermissionDenied(exc.message) from exc
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Change #{change.pk} ({change.setpoint}): {change.get_state_display()}.")
        return redirect("control:approvals")
