"""fedecg's exception classes.

Each subclasses the built-in that fits, so callers may catch either. The CLI turns any
``FedecgError`` into one clear line and exit code 1, never a traceback.
"""

from __future__ import annotations


class FedecgError(Exception):
    """Base class of every error fedecg raises on purpose."""


class ConfigError(FedecgError, ValueError):
    """Raised when a config file or ``--set`` override is unknown, ill-typed or invalid."""


class InputFileError(FedecgError, FileNotFoundError):
    """Raised when an input file or folder that fedecg needs does not exist."""


class TableError(FedecgError, ValueError):
    """Raised when a CSV table lacks a column, or a row holds a value of the wrong kind."""


class RecordError(FedecgError, ValueError):
    """Raised when a WFDB record cannot be read or fails a check (rate, units, leads, NaN)."""


class StoreError(FedecgError, ValueError):
    """Raised when a site store is missing, incomplete, or incompatible with what is asked."""


class PublicEncoderError(FedecgError, ValueError):
    """Raised when ``train.encoder_from`` names no model, a file that is not a fedecg model,
    or a model whose encoder settings, sampling rate or leads differ from the run's."""


class TrainingError(FedecgError, RuntimeError):
    """Raised when training cannot go on (diverged loss, label mismatch, empty split)."""


class FederationError(FedecgError, RuntimeError):
    """Raised when a federated run fails (a ServerApp or ClientApp error, too few sites)."""


class PrivacyError(FedecgError, ValueError):
    """Raised when a privacy request cannot be honoured (unreachable budget, unsupported layer)."""


class OutputExistsError(FedecgError, FileExistsError):
    """Raised when an output path exists and overwriting it was not asked for."""


class DeploymentError(FedecgError, RuntimeError):
    """Raised when a deployment step cannot go on: a certificate, node key, Flower process or
    connection to the SuperLink that is missing, invalid or refused."""
