"""fedecg.explain."""
