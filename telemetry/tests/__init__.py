"""Unit tests of the telemetry app's pure modules (catalogue, parsers); no Django needed."""

from pathlib import Path

# The shared example data beside the repository: /work/shared/data for the checkout at /work/main.
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
