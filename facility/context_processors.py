"""The navigation bar every page shares. Each page that joins adds one line here."""

from django.urls import reverse

# (label, url name, permission needed to see it)
NAVIGATION = [
    ("Overview", "facility:overview", "facility.view_site"),
    ("Approvals", "control:approvals", "control.view_setpointchange"),
    ("Live", "telemetry:live", "telemetry.view_gpusample"),
    ("Loop", "telemetry:loop", "telemetry.view_gpusample"),
    ("Models", "inference:models", "inference.view_modelversion"),
]


def navigation(request):
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"navigation": [], "user_roles": []}
    items = [
        {"label": label, "url": reverse(name), "active": request.resolver_match and
         f"{request.resolver_match.namespace}:{request.resolver_match.url_name}" == name}
        for label, name, perm in NAVIGATION
        if user.has_perm(perm)
    ]
    return {"navigation": items, "user_roles": sorted(user.groups.values_list("name", flat=True))}
