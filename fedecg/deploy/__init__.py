"""Deployment: the ServerApp that ``flwr run`` starts, and the coordinating center's and the
hospitals' tooling around Flower's SuperLink and SuperNodes (certificates, node keys,
processes, study submission, pre-flight checks)."""
