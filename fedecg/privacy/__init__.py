"""fedecg.privacy."""
