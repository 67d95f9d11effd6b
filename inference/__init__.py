"""Inference: the MLA attention module, the telemetry forecaster, and (later) the serving worker.

Nothing under this package may import Django at module level: training, serving and the benchmark use it
standalone.
"""
