"""Offline reinforcement learning for the cooling plant (Zhan et al., ICLR 2025 style): learn a setpoint
policy only from logged transitions, never by exploring the live plant.

- `features`: the observation a policy sees (the twin env's, rebuilt from a `State`, so the same network
  runs on the twin and on live telemetry) and the action coding (moves as a share of each point's max step).
- `dataset`: transitions logged from baseline controllers (plus exploration noise) running on the twin.
- `algorithms`: compact TD3+BC and IQL in torch.
- `checkpoint`: safetensors weights + JSON config with a SHA-256, verified on load.
- `training`: dataset -> trained agent -> checkpoint, with held-out metrics.

Pure Python + torch (no Django); the model-version record lives in `control.models.PolicyModelVersion`.
"""
