"""Policy runs over REST: list and read them, start one (`POST /policy-runs/`), stop one (`POST .../stop/`).

Starting and stopping need `control.run_policy` (operators); the starter becomes the proposer of every
change the run files, so the two-person rule keeps them from approving those. Refusals use the control
API's one error body (`ControlErrorSerializer`).
"""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import BasePermission
from rest_framework.response import Response

from control import runner
from control.api.filters import PolicyRunFilter
from control.api.serializers import ControlErrorSerializer
from control.api.views import ControlViewSetMixin
from control.models import PolicyRun
from facility.models import Site

ERRORS = {code: OpenApiResponse(ControlErrorSerializer, description=text) for code, text in (
    (400, "Invalid request body, unknown policy or bad parameters."),
    (403, "Missing permission (control.run_policy)."),
    (404, "No such policy run."),
    (409, "Already running (start) or already stopped (stop)."),
    (422, "The policy cannot run (for rl: no active model version, or its checkpoint fails verification)."),
)}


class PolicyRunSerializer(serializers.ModelSerializer):
    site = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    started_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    stopped_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = PolicyRun
        fields = ("id", "site", "policy", "params", "enabled", "interval_seconds", "started_by", "started_at",
                  "stopped_by", "stopped_at", "last_run_at", "last_outcome", "last_message", "runs",
                  "proposals_filed")
        read_only_fields = fields


class StartPolicyRunSerializer(serializers.Serializer):
    site = serializers.SlugRelatedField(slug_field="slug", queryset=Site.objects.all())
    policy = serializers.CharField(max_length=64, help_text="A registered policy: fixed, trim_respond, pid, rl…")
    interval_seconds = serializers.IntegerField(min_value=10, max_value=runner.MAX_INTERVAL_S, default=60,
                                                help_text="Seconds between decisions (the policy's own: 60 s).")
    params = serializers.DictField(required=False, default=dict,
                                   help_text="Keyword arguments for the policy (rl: model_version).")


class ViewPolicyRunPermission(BasePermission):
    """Signed in with `control.view_policyrun`; starting and stopping are checked by control.runner."""

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated
                    and request.user.has_perm("control.view_policyrun"))


@extend_schema_view(
    list=extend_schema(responses={200: PolicyRunSerializer(many=True), 403: ERRORS[403]}),
    retrieve=extend_schema(responses={200: PolicyRunSerializer, 403: ERRORS[403], 404: ERRORS[404]}),
)
class PolicyRunViewSet(ControlViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                       mixins.CreateModelMixin, viewsets.GenericViewSet):
    queryset = PolicyRun.objects.select_related("site", "started_by", "stopped_by")
    serializer_class = PolicyRunSerializer
    permission_classes = [ViewPolicyRunPermission]
    filterset_class = PolicyRunFilter
    ordering_fields = ["id", "started_at", "policy"]

    @extend_schema(request=StartPolicyRunSerializer,
                   responses={201: PolicyRunSerializer, **{c: ERRORS[c] for c in (400, 403, 409, 422)}},
                   description="Start running a policy on a site (needs control.run_policy). Every interval the "
                               "control queue files its proposals as Pending changes proposed by you.")
    def create(self, request, *args, **kwargs):
        body = StartPolicyRunSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        v = body.validated_data
        run = runner.start_run(v["site"], v["policy"], user=request.user, interval_seconds=v["interval_seconds"],
                               params=v["params"])
        return Response(self.get_serializer(run).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: PolicyRunSerializer, **{c: ERRORS[c] for c in (403, 404, 409)}},
                   description="Stop a policy run (needs control.run_policy). Its open proposals stay as they are.")
    @action(detail=True, methods=["post"])
    def stop(self, request, pk=None):
        get_object_or_404(PolicyRun, pk=pk)
        run = runner.stop_run(int(pk), user=request.user)
        return Response(self.get_serializer(PolicyRun.objects.get(pk=run.pk)).data)
