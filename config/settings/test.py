"""Tests: real PostgreSQL and Redis on 127.0.0.1 unless the environment points elsewhere."""

import os

# Set before base reads them, so a bare `pytest` talks to the real services.
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/fusedc")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")

from .base import *  # noqa: F403

# Fast hashing: tests create many users; production keeps the default.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
WHITENOISE_USE_FINDERS = True
