"""fedecg.federated."""
