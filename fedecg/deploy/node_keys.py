"""A hospital node's identity: the EC key pair Flower's SuperNode authentication uses.

The private key stays at the hospital (``node.key``, OpenSSH format, mode 600); the public key
(``node.pub``) goes to the coordinating center, which registers it. Only registered nodes may
join a SuperLink started with SuperNode authentication.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedecg.errors import DeploymentError, InputFileError
from fedecg.io import atomic_write_bytes

NODE_KEY, NODE_PUBLIC_KEY = "node.key", "node.pub"
NIST_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


def create_node_keys(folder: Path, overwrite: bool = False) -> Path:
    """Write ``node.key`` and ``node.pub`` into ``folder``; return the public key's path."""
    folder = Path(folder)
    if (folder / NODE_KEY).exists() and not overwrite:
        raise DeploymentError(f"{folder / NODE_KEY} exists: this node already has an identity "
                              "(its public key is registered under it); pass --overwrite only to "
                              "replace it, then register the new node.pub")
    key = ec.generate_private_key(ec.SECP384R1())
    atomic_write_bytes(folder / NODE_KEY, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()))
    (folder / NODE_KEY).chmod(0o600)
    atomic_write_bytes(folder / NODE_PUBLIC_KEY, key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n")
    return folder / NODE_PUBLIC_KEY


def check_node_key(path: Path) -> None:
    """Refuse a node private key Flower cannot use (missing, unreadable, not NIST EC)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: node private key not found; create the node's key pair "
                             "with `fedecg node keygen` and have node.pub registered")
    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise DeploymentError(f"{path}: not an unencrypted OpenSSH private key ({exc}); "
                              "create one with `fedecg node keygen`") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, NIST_CURVES):
        raise DeploymentError(f"{path}: Flower needs an elliptic-curve key on a NIST curve "
                              "(P-256/384/521); create one with `fedecg node keygen`")


def check_public_key(path: Path) -> None:
    """Refuse a public key the SuperLink cannot register."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: public key not found; the hospital sends the node.pub "
                             "that `fedecg node keygen` wrote")
    try:
        key = serialization.load_ssh_public_key(path.read_bytes())
    except (ValueError, TypeError) as exc:
        raise DeploymentError(f"{path}: not an OpenSSH public key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, NIST_CURVES):
        raise DeploymentError(f"{path}: expected an elliptic-curve public key on a NIST curve")
