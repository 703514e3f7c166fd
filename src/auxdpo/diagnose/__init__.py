"""`auxdpo diagnose`: whether DPO is misspecified on a run's model, capacity and data,
predicted before training (docs/diagnose.md)."""
