"""Control API: setpoint changes (propose, approve, deny, cancel) and the audit log (read only).

Thin viewsets over `control.changes`: the services check permissions, the two-person rule and the
envelope; the views translate their refusals into one error body (`ControlErrorSerializer`).
"""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import BasePermission
from rest_framework.response import Response

from control import changes
from control.api import filters, serializers
from control.models import AuditEntry, SetpointChange
from facility.api.errors import api_exception_handler

ERRORS = {code: OpenApiResponse(serializers.ControlErrorSerializer, description=text) for code, text in (
    (400, "Invalid request body."),
    (403, "Missing permission, or the two-person rule."),
    (404, "No such change."),
    (409, "The change is not in a state that allows this."),
    (422, "Refused by the safety envelope, or no change."),
)}


def control_exception_handler(exc, context):
    """The API's one error body; a refusal by the control services also lists its reasons."""
    if isinstance(exc, changes.ControlError):
        body = {"code": exc.code, "message": exc.message}
        if exc.reasons:
            body["reasons"] = exc.reasons
        return Response(body, status=exc.status)
    return api_exception_handler(exc, context)


class ViewChangePermission(BasePermission):
    """Signed in with `control.view_setpointchange`; the action's own permission is checked by the service."""

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated
                    and request.user.has_perm("control.view_setpointchange"))


class ControlViewSetMixin:
    def get_exception_handler(self):
        return control_exception_handler


@extend_schema_view(
    list=extend_schema(responses={200: serializers.SetpointChangeSerializer(many=True), 403: ERRORS[403]}),
    retrieve=extend_schema(responses={200: serializers.SetpointChangeSerializer, 403: ERRORS[403],
                                      404: ERRORS[404]}),
)
class SetpointChangeViewSet(ControlViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                            mixins.CreateModelMixin, viewsets.GenericViewSet):
    queryset = SetpointChange.objects.select_related("setpoint__cooling_unit", "proposed_by", "decided_by")
    serializer_class = serializers.SetpointChangeSerializer
    filterset_class = filters.SetpointChangeFilter
    ordering_fields = ["id", "created_at", "decided_at", "state"]

    @extend_schema(request=serializers.ProposeSerializer,
                   responses={201: serializers.SetpointChangeSerializer, **{c: ERRORS[c] for c in (400, 403, 422)}},
                   description="Propose a change. The envelope may clip the value (see `envelope_verdict`) or "
                               "refuse it (422 with reasons); the change then waits for another user's approval.")
    def create(self, request, *args, **kwargs):
        data = serializers.ProposeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        change = changes.propose(v["setpoint"], v["value"], user=request.user, unit=v.get("unit"),
                                 rationale=v["rationale"], predicted_effect=v["predicted_effect"],
                                 forecast_hottest_gpu_c=v["forecast_hottest_gpu_c"])
        return Response(self.get_serializer(change).data, status=status.HTTP_201_CREATED)

    def _decide(self, request, pk, service):
        body = serializers.DecisionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        get_object_or_404(SetpointChange, pk=pk)
        change = service(int(pk), request.user, body.validated_data["comment"])
        return Response(self.get_serializer(SetpointChange.objects.get(pk=change.pk)).data)

    _decision_schema = {
        "request": serializers.DecisionSerializer,
        "responses": {200: serializers.SetpointChangeSerializer, **{c: ERRORS[c] for c in (400, 403, 404, 409)}},
    }

    @extend_schema(**_decision_schema, description="Approve (needs control.approve_setpointchange; not the "
                                                   "proposer). The change is applied by the control queue.")
    @action(detail=True, methods=["post"], permission_classes=[ViewChangePermission])
    def approve(self, request, pk=None):
        return self._decide(request, pk, changes.approve)

    @extend_schema(**_decision_schema, description="Deny (needs control.approve_setpointchange; not the proposer).")
    @action(detail=True, methods=["post"], permission_classes=[ViewChangePermission])
    def deny(self, request, pk=None):
        return self._decide(request, pk, changes.deny)

    @extend_schema(**_decision_schema, description="Withdraw a pending or approved change (its proposer or an "
                                                   "approver).")
    @action(detail=True, methods=["post"], permission_classes=[ViewChangePermission])
    def cancel(self, request, pk=None):
        return self._decide(request, pk, changes.cancel)


class AuditEntryViewSet(ControlViewSetMixin, viewsets.ReadOnlyModelViewSet):
    """The append-only control log: read only, here as everywhere."""

    queryset = AuditEntry.objects.all()
    serializer_class = serializers.AuditEntrySerializer
    filterset_class = filters.AuditEntryFilter
    ordering_fields = ["id", "at"]
