"""fedecg.models."""
