"""URL roots. Each app owns its pages and API routes; this file only mounts them."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpResponsePermanentRedirect
from django.templatetags.static import static
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView

from config.health import healthz
from config.metrics import metrics

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    # Browsers ask for /favicon.ico whatever the page links to (the login page, the API docs).
    # (resolved per request: the manifest of hashed static names exists only after collectstatic)
    path("favicon.ico", lambda request: HttpResponsePermanentRedirect(static("img/favicon.svg"))),
    path("metrics", metrics, name="metrics"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves Swagger UI's start-up script as a file: no inline script, so the CSP holds.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
    path("api/v1/", include("facility.api.urls")),
    path("api/v1/", include("telemetry.api.urls")),
    path("api/v1/", include("inference.api.urls")),
    path("api/v1/", include("control.api.urls")),
    path("", include("facility.urls")),
    path("", include("control.urls")),
    path("", include("telemetry.urls")),
    path("", include("inference.urls")),
]

# Under /api/ even a path no view matched answers in the API's error body.
handler404 = "facility.api.errors.not_found"
handler500 = "facility.api.errors.server_error"
