"""A hospital's node: pre-flight checks and ``flower-supernode`` over the site's own store.

``NODE/node.key`` + ``node.pub`` (``fedecg node keygen``), ``NODE/state/`` (the site's model
between rounds, per study), ``NODE/logs/supernode.log`` and ``NODE/supernode.pid``.
Before a SuperNode starts, ``check_node`` says in one line what would stop it: no store at
``data-dir``, a store that does not match the study, a SuperLink that is unreachable, whose
certificate expired, does not cover the address, or is not signed by the given CA.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from fedecg.config.federated import StudyConfig
from fedecg.data.prepare import schema_manifest
from fedecg.data.store import MANIFEST_FILE, SiteStore
from fedecg.deploy.certs import check_ca
from fedecg.deploy.flower import Service
from fedecg.deploy.node_keys import NODE_KEY, NODE_PUBLIC_KEY, check_node_key
from fedecg.deploy.superlink import last_error, split_address
from fedecg.errors import DeploymentError, FedecgError
from fedecg.federated import keys
from fedecg.federated.flower_env import flower_env

DEFAULT_PORT = 9094  # the SuperNode's local ClientApp API; one per node on a machine
_NODE_ID = re.compile(r"SuperNode ID: (\d+)")


@dataclass(frozen=True)
class NodeKit:
    """A hospital node's folder (see the module docstring)."""

    folder: Path

    @property
    def key(self) -> Path:
        """The node's private key (never leaves the hospital)."""
        return Path(self.folder) / NODE_KEY

    @property
    def public_key(self) -> Path:
        """The public key the coordinating center registers."""
        return Path(self.folder) / NODE_PUBLIC_KEY

    @property
    def supernode(self) -> Service:
        """The SuperNode process."""
        return Service(Path(self.folder), "supernode")


def check_store(data_dir: Path, study: StudyConfig | None = None) -> SiteStore:
    """The site store at ``data_dir``, matching ``study``'s prepare settings when given."""
    data_dir = Path(data_dir)
    if not (data_dir / MANIFEST_FILE).is_file():
        raise DeploymentError(f"data-dir {data_dir}: no site store here ({MANIFEST_FILE} "
                              "missing); point --data-dir at the folder that `fedecg prepare "
                              "--out` wrote")
    try:
        store = SiteStore.open(data_dir)
    except FedecgError as exc:
        raise DeploymentError(f"data-dir {data_dir}: {exc}") from None
    deployed = study.data.deployed if study is not None else None
    if deployed is not None:
        problems = schema_manifest(deployed.prepare, "study").incompatibilities(store.manifest)
        if problems:
            raise DeploymentError(f"data-dir {data_dir}: the store does not match the study "
                                  f"({'; '.join(problems)}, study vs store); prepare it again "
                                  "with the study's prepare settings (fedecg prepare --config)")
    return store


def check_link(superlink: str, ca: Path | None, timeout: float = 10.0) -> None:
    """A TLS handshake with the SuperLink, verifying its certificate as the SuperNode will."""
    host, port = split_address(superlink)
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=host):
            return
    except ssl.SSLCertVerificationError as exc:
        raise DeploymentError(f"SuperLink {superlink}: {_verify_problem(exc, ca)}") from None
    except (ssl.SSLError, OSError) as exc:
        raise DeploymentError(f"SuperLink {superlink} is unreachable ({exc.strerror or exc}); "
                              "check the address and that the SuperLink runs "
                              "(`fedecg server start`)") from None


def _verify_problem(exc: ssl.SSLCertVerificationError, ca: Path | None) -> str:
    message = str(exc.verify_message or exc)
    if "expired" in message:
        return "its certificate has expired; the coordinating center must renew it " \
               "(`fedecg server init --renew`)"
    if "mismatch" in message:
        return f"its certificate does not cover this address ({message}); dial an address " \
               "the certificate names, or have it reissued with this one"
    if ca is None:
        return f"its certificate cannot be verified without the federation's CA ({message}); " \
               "pass the ca.crt of the coordinating center with --ca"
    return f"its certificate is not signed by {ca} ({message}); use the federation's ca.crt"


def check_node(kit: NodeKit, superlink: str, ca: Path | None, data_dir: Path,
               study: StudyConfig | None = None) -> SiteStore:
    """Everything ``start_supernode`` checks before it starts a process."""
    check_node_key(kit.key)
    if ca is not None:
        check_ca(ca)
    store = check_store(data_dir, study)
    check_link(superlink, ca)
    return store


def start_supernode(kit: NodeKit, superlink: str, ca: Path | None, data_dir: Path, *,
                    site_name: str | None = None, port: int = DEFAULT_PORT,
                    study: StudyConfig | None = None, preflight: bool = True,
                    wait_s: float = 60.0) -> int:
    """Start ``flower-supernode`` for the store at ``data_dir``; return its node id.

    Returns once the SuperLink has admitted the node; a node it refuses (key not registered,
    TLS not verified) ends with a ``DeploymentError`` saying why.
    """
    data_dir = Path(data_dir).resolve()
    store = check_node(kit, superlink, ca, data_dir, study) if preflight else None
    name = site_name or (store.manifest.site_name if store is not None else data_dir.name)
    node_config = {keys.NODE_DATA_DIR: data_dir, keys.NODE_SITE_NAME: name,
                   keys.NODE_STATE_DIR: Path(kit.folder).resolve() / "state"}
    return launch(kit, superlink, ca, node_config, port, wait_s)


def launch(kit: NodeKit, superlink: str, ca: Path | None, node_config: dict[str, object],
           port: int = DEFAULT_PORT, wait_s: float = 60.0) -> int:
    """Start ``flower-supernode`` with ``node_config`` (no checks); return its node id."""
    command = ["flower-supernode", "--superlink", superlink,
               "--auth-supernode-private-key", str(Path(kit.key).resolve()),
               "--node-config", " ".join(f'{key}="{value}"' if isinstance(value, str | Path)
                                         else f"{key}={value}"
                                         for key, value in node_config.items()),
               "--port", str(port)]
    if ca is not None:
        command += ["--root-certificates", str(Path(ca).resolve())]
    kit.supernode.start(command, flower_env(Path(kit.folder) / "flwr-home"))
    return _await_admission(kit, wait_s)


def _await_admission(kit: NodeKit, wait_s: float) -> int:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        found = _NODE_ID.search(kit.supernode.log_text())
        if found:
            return int(found.group(1))
        if kit.supernode.pid() is None:
            raise DeploymentError(f"the SuperNode was refused: {_refusal(kit.supernode)} "
                                  f"(log: {kit.supernode.log_file})")
        time.sleep(0.25)
    kit.supernode.stop()
    raise DeploymentError(f"the SuperNode was not admitted within {wait_s:g} s (log: "
                          f"{kit.supernode.log_file})")


def _refusal(service: Service) -> str:
    text = service.log_text()
    if "Failed to activate SuperNode" in text:
        return "the SuperLink does not know this node's public key; send node.pub to the " \
               "coordinating center to register (`fedecg server register`)"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "the SuperLink's certificate could not be verified; pass the federation's " \
               "ca.crt with --ca"
    return last_error(service)


def stop_supernode(kit: NodeKit) -> bool:
    """Stop the kit's SuperNode by its PID; False when none ran."""
    return kit.supernode.stop()
