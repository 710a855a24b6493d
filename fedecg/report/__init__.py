"""fedecg.report."""
