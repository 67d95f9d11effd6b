"""The embedded default: one machine, nothing to install (SQLite, in-process workers and channel layer)."""

from .base import *  # noqa: F403

# Serve static files from the apps' folders directly, so the demo needs no collectstatic step.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG  # noqa: F405
