from django.apps import AppConfig


class ControlConfig(AppConfig):
    name = "control"

    def ready(self):
        from control import access_log  # noqa: F401 - connects the sign-in and token-use audit receivers

        # The loop page (telemetry) shows setpoint changes without importing control: we register with it.
        from control.annotations import setpoint_change_annotations
        from telemetry import views

        if setpoint_change_annotations not in views.SETPOINT_ANNOTATION_PROVIDERS:
            views.SETPOINT_ANNOTATION_PROVIDERS.append(setpoint_change_annotations)
