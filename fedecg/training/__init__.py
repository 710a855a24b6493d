"""fedecg.training."""
