"""fedecg: federated training of ECG models that carry clinical knowledge."""

__version__ = "0.1.0"
