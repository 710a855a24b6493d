"""A hospital node's identity: the EC key pair Flower's SuperNode authentication uses.

The private key stays at the hospital (``node.key``, OpenSSH format, mode 600, in a folder of
mode 700); the public key (``node.pub``) goes to the coordinating center, which registers it.
Only registered nodes may join a SuperLink started with SuperNode authentication.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedecg.errors import DeploymentError, InputFileError
from fedecg.io import (
    PRIVATE,
    SHARED,
    OutputKind,
    atomic_write_bytes,
    claim_output,
    mark_output,
    private_dir,
)

NODE_KEY, NODE_PUBLIC_KEY = "node.key", "node.pub"
NIST_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


def create_node_keys(folder: Path, overwrite: bool = False) -> Path:
    """Write ``node.key`` and ``node.pub`` into the node kit ``folder`` (made 0700 and marked
    as fedecg's); return the public key's path."""
    folder = Path(folder)
    claim_output(folder, OutputKind.NODE_KIT, existing_ok=True)
    if (folder / NODE_KEY).exists() and not overwrite:
        raise DeploymentError(f"{folder / NODE_KEY} exists: this node already has an identity "
                              "(its public key is registered under it); pass --overwrite only to "
                              "replace it, then register the new node.pub")
    key = ec.generate_private_key(ec.SECP384R1())
    private_dir(folder)
    mark_output(folder, OutputKind.NODE_KIT)
    atomic_write_bytes(folder / NODE_KEY, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()), PRIVATE)
    atomic_write_bytes(folder / NODE_PUBLIC_KEY, key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n", SHARED)
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
    if b"PRIVATE KEY" in path.read_bytes():
        raise DeploymentError(f"{path}: this is a node's private key, not its public key; "
                              "register the node.pub beside it. The private key has left the "
                              "hospital: create a new identity there (`fedecg node keygen "
                              "--overwrite`) and register its node.pub")
    try:
        key = serialization.load_ssh_public_key(path.read_bytes())
    except (ValueError, TypeError) as exc:
        raise DeploymentError(f"{path}: not an OpenSSH public key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, NIST_CURVES):
        raise DeploymentError(f"{path}: expected an elliptic-curve public key on a NIST curve")
