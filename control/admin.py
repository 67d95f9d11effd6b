"""Django admin for control: changes are read-only with approve/deny/cancel actions (through the same
services as pages and API), the audit log is read-only for everyone, autonomy edits are audited."""

from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse

from control import changes
from control.models import AuditEntry, AutonomySetting, ControllerPause, ModbusPoint, SetpointChange
from inference.checkpoint import CheckpointError


class DecisionForm(forms.Form):
    comment = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 3}))


def _decision_action(service, verb: str, permission: str):
    def action(modeladmin, request, queryset):
        if "confirm" in request.POST:
            form = DecisionForm(request.POST)
            if form.is_valid():
                done = 0
                for change in queryset:
                    try:
                        service(change.pk, request.user, form.cleaned_data["comment"])
                        done += 1
                    except changes.ControlError as exc:
                        modeladmin.message_user(request, f"#{change.pk}: {exc.message}", messages.ERROR)
                if done:
                    modeladmin.message_user(request, f"{verb.capitalize()}: {done} change(s).", messages.SUCCESS)
                return None
        else:
            form = DecisionForm()
        return TemplateResponse(request, "control/admin_decision.html", {
            **modeladmin.admin_site.each_context(request), "title": f"{verb.capitalize()} setpoint changes",
            "verb": verb, "changes": queryset, "form": form, "action": action.__name__,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME, "opts": modeladmin.model._meta,
        })

    action.__name__ = f"{verb}_selected"
    return admin.action(description=f"{verb.capitalize()} selected changes", permissions=[permission])(action)


@admin.register(SetpointChange)
class SetpointChangeAdmin(admin.ModelAdmin):
    """Read-only: proposals come from the page, API or policies; decisions through the actions below."""

    list_display = ("id", "setpoint", "from_value", "to_value", "state", "origin", "proposed_by", "policy",
                    "decided_by", "created_at", "expires_at")
    list_filter = ("state", "origin", "autonomous", "setpoint__cooling_unit__site")
    search_fields = ("setpoint__name", "setpoint__cooling_unit__name", "rationale", "policy")
    list_select_related = ("setpoint__cooling_unit", "proposed_by", "decided_by")
    date_hierarchy = "created_at"
    actions = [
        _decision_action(changes.approve, "approve", "approve"),
        _decision_action(changes.deny, "deny", "approve"),
        _decision_action(changes.cancel, "cancel", "approve"),
    ]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_approve_permission(self, request):
        return request.user.has_perm("control.approve_setpointchange")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ("at", "actor_label", "action", "subject", "message")
    list_filter = ("action", "site")
    search_fields = ("subject", "actor_label", "message")
    date_hierarchy = "at"

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AutonomySetting)
class AutonomySettingAdmin(admin.ModelAdmin):
    list_display = ("setpoint", "autonomous", "daily_change_budget", "updated_by", "updated_at")
    list_filter = ("autonomous",)
    readonly_fields = ("updated_by", "updated_at")

    def save_model(self, request, obj, form, change):
        # Through the service, so the change is permission-checked and audited like every other path.
        changes.set_autonomy(obj.setpoint, request.user, autonomous=obj.autonomous,
                             daily_change_budget=obj.daily_change_budget)
        obj.pk = AutonomySetting.objects.get(setpoint=obj.setpoint).pk


@admin.register(ControllerPause)
class ControllerPauseAdmin(admin.ModelAdmin):
    list_display = ("site", "paused", "automatic", "since", "reason")
    readonly_fields = ("site", "paused", "automatic", "since", "reason")
    actions = ["resume"]

    @admin.action(description="Resume the controllers of the selected sites", permissions=["change"])
    def resume(self, request, queryset):
        for pause in queryset:
            changes.resume_controllers(pause.site, "resumed by hand", actor=request.user)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ModbusPoint)
class ModbusPointAdmin(admin.ModelAdmin):
    list_display = ("setpoint", "host", "port", "unit_id", "register", "readback_register", "scale", "timeout_seconds")
    search_fields = ("setpoint__name", "setpoint__cooling_unit__name", "host")
    list_select_related = ("setpoint__cooling_unit",)


# --- Policy runs and RL model versions (control.runner, control.rl) ------------------------------------

from control import runner  # noqa: E402
from control.models import PolicyModelVersion, PolicyRun  # noqa: E402


class StartPolicyRunForm(forms.ModelForm):
    """Starting a run from the admin: the same checks as the API (control.runner.start_run)."""

    policy = forms.ChoiceField(choices=())

    class Meta:
        model = PolicyRun
        fields = ("site", "policy", "interval_seconds", "params")

    def __init__(self, *args, **kwargs):
        from control import policies

        super().__init__(*args, **kwargs)
        self.fields["policy"].choices = [(n, n) for n in policies.names()]

    def clean(self):
        data = super().clean()
        if data.get("policy") and data.get("interval_seconds") is not None:
            try:
                runner.check_request(data["policy"], data.get("params") or {}, data["interval_seconds"])
            except changes.ControlError as exc:
                raise forms.ValidationError(exc.message) from None
            if data.get("site") and PolicyRun.objects.filter(site=data["site"], policy=data["policy"],
                                                             enabled=True).exists():
                raise forms.ValidationError(f"{data['policy']} is already running on {data['site']}")
        return data


@admin.register(PolicyRun)
class PolicyRunAdmin(admin.ModelAdmin):
    """Start a run with Add (you become the proposer of its changes); stop runs with the action."""

    list_display = ("id", "site", "policy", "enabled", "interval_seconds", "started_by", "started_at",
                    "last_run_at", "last_outcome", "runs", "proposals_filed")
    list_filter = ("enabled", "policy", "site", "last_outcome")
    list_select_related = ("site", "started_by")
    form = StartPolicyRunForm
    actions = ["stop_selected"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields] if obj is not None else []

    def has_add_permission(self, request):
        return request.user.has_perm("control.run_policy")

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_run_permission(self, request):
        return request.user.has_perm("control.run_policy")

    def save_model(self, request, obj, form, change):
        run = runner.start_run(obj.site, obj.policy, user=request.user, interval_seconds=obj.interval_seconds,
                               params=obj.params or {})
        obj.pk = run.pk
        obj.started_by, obj.started_at = run.started_by, run.started_at

    @admin.action(description="Stop the selected policy runs", permissions=["run"])
    def stop_selected(self, request, queryset):
        stopped = 0
        for run in queryset.filter(enabled=True):
            try:
                runner.stop_run(run.pk, user=request.user)
                stopped += 1
            except changes.ControlError as exc:
                self.message_user(request, f"#{run.pk}: {exc.message}", messages.ERROR)
        self.message_user(request, f"Stopped {stopped} run(s).", messages.SUCCESS)


@admin.register(PolicyModelVersion)
class PolicyModelVersionAdmin(admin.ModelAdmin):
    """Trained policies are read only (the checkpoint's checksum and config must keep matching)."""

    list_display = ("name", "policy", "algorithm", "active", "training_seconds", "created_at")
    list_filter = ("policy", "algorithm", "active")
    actions = ["activate_selected"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_activate_permission(self, request):
        return request.user.has_perm("control.change_policymodelversion")

    @admin.action(description="Make the selected version the active one", permissions=["activate"])
    def activate_selected(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version to activate.", messages.ERROR)
            return
        version = queryset.get()
        try:
            version.load()  # a checkpoint that does not verify would leave the policy unable to run
        except (CheckpointError, ValueError, OSError) as exc:
            self.message_user(request, f"{version.name} was not activated: {exc}", messages.ERROR)
            return
        version.activate()
        self.message_user(request, f"{version.name} is now the active {version.policy} model.", messages.SUCCESS)
