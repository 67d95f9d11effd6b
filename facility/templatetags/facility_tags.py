from django import template

register = template.Library()


@register.filter
def envelope_percent(setpoint) -> float:
    """Where the current value sits in its allowable range, 0–100, for the envelope gauge."""
    span = setpoint.allowable_max - setpoint.allowable_min
    if span <= 0:
        return 50.0
    return round(100 * (setpoint.value - setpoint.allowable_min) / span, 1)


@register.filter
def unit_symbol(setpoint) -> str:
    return setpoint.get_unit_display()
