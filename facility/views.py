"""Inventory pages, and the user's own API tokens."""

from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.db.models import Count, Prefetch
from django.shortcuts import redirect
from django.utils import timezone
from django.views.generic import TemplateView

from facility.mixins import RoleRequiredMixin
from facility.models import ApiToken, CoolingUnit, Hall, Rack, Setpoint, Site


class OverviewView(RoleRequiredMixin, TemplateView):
    """Every site at a glance: halls with their floor map of racks, cooling plant and setpoint envelopes."""

    template_name = "facility/overview.html"
    permission_required = "facility.view_site"

    def get_context_data(self, **kwargs):
        units = CoolingUnit.objects.order_by("kind", "name").prefetch_related(
            Prefetch("setpoints", queryset=Setpoint.objects.order_by("name"))
        )
        racks = Rack.objects.annotate(node_count=Count("nodes", distinct=True),
                                      gpu_count=Count("nodes__gpus", distinct=True))
        halls = Hall.objects.annotate(
            rack_count=Count("racks", distinct=True),
            node_count=Count("racks__nodes", distinct=True),
            gpu_count=Count("racks__nodes__gpus", distinct=True),
        ).prefetch_related(Prefetch("racks", queryset=racks), Prefetch("cooling_units", queryset=units))
        sites = Site.objects.prefetch_related(
            Prefetch("halls", queryset=halls),
            Prefetch("cooling_units", queryset=units.filter(hall__isnull=True), to_attr="central_plant"),
        )
        return super().get_context_data(sites=sites, **kwargs)


class ApiTokensView(LoginRequiredMixin, TemplateView):
    """A user's API tokens: create one limited to some of their roles (shown once), see use, revoke."""

    template_name = "facility/api_tokens.html"
    EXPIRY_DAYS = (30, 90, 365)

    def get_context_data(self, **kwargs):
        return super().get_context_data(
            tokens=self.request.user.api_tokens.prefetch_related("roles"),
            roles=self.request.user.groups.order_by("name"),
            expiry_days=self.EXPIRY_DAYS,
            **kwargs,
        )

    def post(self, request):
        if "revoke" in request.POST:
            revoke = request.POST["revoke"]
            if not revoke.isdigit():  # a crafted form: an id the database would refuse to compare
                return self.render_to_response(self.get_context_data(errors=[f"revoke: {revoke!r} is not a token "
                                                                             "id."]), status=400)
            updated = request.user.api_tokens.filter(pk=revoke, revoked_at__isnull=True).update(
                revoked_at=timezone.now()
            )
            messages.success(request, "Token revoked." if updated else "No such active token.")
            return redirect("facility:api-tokens")
        name = request.POST.get("name", "").strip()
        role_ids = request.POST.getlist("roles")
        roles = request.user.groups.filter(pk__in=[r for r in role_ids if r.isdigit()])
        try:
            days = int(request.POST.get("expires_in_days", ""))
        except ValueError:
            days = 0
        errors = []
        if not name or len(name) > 100:
            errors.append("Give the token a name of at most 100 characters.")
        if not roles or len(roles) != len(set(role_ids)):
            errors.append("Choose at least one of your roles for the token, and only your own.")
        if days not in self.EXPIRY_DAYS:
            errors.append(f"Expiry must be one of {', '.join(map(str, self.EXPIRY_DAYS))} days.")
        if errors:
            return self.render_to_response(self.get_context_data(errors=errors, form=request.POST), status=400)
        token = ApiToken(user=request.user, name=name, expires_at=timezone.now() + timedelta(days=days))
        secret = token.issue()
        token.save()
        token.roles.set(roles)
        return self.render_to_response(self.get_context_data(new_token=secret, new_token_name=name))
