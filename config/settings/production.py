"""Production: PostgreSQL, Redis, workers by queue. Every secret and address comes from the environment."""

from .base import *  # noqa: F403
from .base import env

# Fail at start-up rather than run with an embedded part by accident.
SECRET_KEY = env.str("SECRET_KEY")
DATABASES = {"default": env.db("DATABASE_URL")}
# Per request by default: under ASGI a persistent connection is left open per thread until garbage-collected
# (https://docs.djangoproject.com/en/5.2/ref/databases/#persistent-connections), and uvicorn piled them up
# until PostgreSQL refused clients (bench/dashboard.py). Celery workers are synchronous and reuse theirs
# (the Procfile sets CONN_MAX_AGE for them).
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=0)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if not env.str("REDIS_URL", default=""):
    raise RuntimeError("REDIS_URL must be set in production (Celery broker, channel layer, telemetry buffer)")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
DEBUG = False

# https://docs.djangoproject.com/en/5.2/howto/deployment/checklist/
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
# https://docs.djangoproject.com/en/5.2/ref/middleware/#http-strict-transport-security
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
HEALTHZ_REQUIRED_QUEUES = env.list("HEALTHZ_REQUIRED_QUEUES", default=["ingest", "inference", "control"])

STATIC_ROOT = env.path("STATIC_ROOT", default=str(BASE_DIR / "staticfiles"))  # noqa: F405
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Hashed, compressed files after `collectstatic`; served by WhiteNoise.
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
