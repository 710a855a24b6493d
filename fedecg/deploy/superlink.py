"""The coordinating center's kit: one folder with the TLS material, Flower's home and the
SuperLink's state, log and PID.

``KIT/tls/`` (``ca.crt``, ``ca.key``, ``server.pem``, ``server.key``), ``KIT/flwr-home/``
(``config.toml`` with the connection ``fedecg``), ``KIT/superlink.db`` (the SuperLink's
state, so registered nodes survive a restart), ``KIT/logs/superlink.log``,
``KIT/superlink.pid`` and ``KIT/server.json`` (the address it serves).
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedecg.deploy.certs import (
    CA_CERT,
    SERVER_CERT,
    SERVER_KEY,
    Validity,
    check_server_cert,
    create_ca,
    issue_server_cert,
)
from fedecg.deploy.flower import Service, flower_env, flwr_json, write_connection
from fedecg.deploy.node_keys import check_public_key
from fedecg.errors import DeploymentError
from fedecg.io import atomic_write_json

CONNECTION = "fedecg"
SERVER_FILE = "server.json"


@dataclass(frozen=True)
class ServerKit:
    """The coordinating center's folder (see the module docstring)."""

    folder: Path

    @property
    def tls(self) -> Path:
        """The CA and the SuperLink's certificate and keys."""
        return Path(self.folder) / "tls"

    @property
    def ca(self) -> Path:
        """The CA certificate every hospital receives."""
        return self.tls / CA_CERT

    @property
    def flwr_home(self) -> Path:
        """The private ``FLWR_HOME`` of every Flower command the center runs."""
        return Path(self.folder) / "flwr-home"

    @property
    def superlink(self) -> Service:
        """The SuperLink process."""
        return Service(Path(self.folder), "superlink")

    def address(self) -> str:
        """The address the running SuperLink serves (from ``server.json``)."""
        path = Path(self.folder) / SERVER_FILE
        if not path.is_file():
            raise DeploymentError(f"{self.folder}: no SuperLink was started from this kit; run "
                                  "`fedecg server start` first")
        return str(json.loads(path.read_text())["address"])


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` → ``(host, port)``, with a clear error."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise DeploymentError(f"address {address!r}: expected HOST:PORT, e.g. 127.0.0.1:9300")
    return host.strip("[]"), int(port)


def init_server(folder: Path, hosts: list[str], days: int = 365, renew: bool = False) -> ServerKit:
    """Create the kit's CA (once) and a server certificate covering ``hosts``.

    ``renew`` keeps the CA (hospitals keep their ca.crt) and issues a new server certificate.
    """
    kit = ServerKit(Path(folder))
    if kit.ca.exists() and not renew:
        raise DeploymentError(f"{kit.ca} exists: this kit already has a CA; pass --renew to "
                              "issue a new server certificate with the same CA")
    if not kit.ca.exists():
        create_ca(kit.tls)
    issue_server_cert(kit.tls, hosts, Validity(days=days))
    return kit


def start_superlink(kit: ServerKit, address: str, bind: str | None = None,
                    wait_s: float = 60.0) -> int:
    """Start ``flower-superlink`` with TLS and SuperNode authentication; return its PID.

    ``address`` is what hospitals dial (the certificate must cover its host); ``bind`` the
    interface to listen on (default: the address's host). Returns once it accepts TLS.
    """
    host, port = split_address(address)
    check_server_cert(kit.tls, host)
    command = ["flower-superlink", "--ssl-ca-certfile", str(kit.ca),
               "--ssl-certfile", str(kit.tls / SERVER_CERT),
               "--ssl-keyfile", str(kit.tls / SERVER_KEY), "--enable-supernode-auth",
               "--disable-runtime-dependency-installation", "--host", bind or host,
               "--port", str(port), "--database", str(Path(kit.folder) / "superlink.db")]
    pid = kit.superlink.start(command, flower_env(kit.flwr_home))
    write_connection(kit.flwr_home, CONNECTION, address, kit.ca)
    atomic_write_json(Path(kit.folder) / SERVER_FILE,
                      {"address": address, "pid": pid, "command": command})
    _await_tls(kit, host, port, wait_s)
    return pid


def _await_tls(kit: ServerKit, host: str, port: int, wait_s: float) -> None:
    context = ssl.create_default_context(cafile=str(kit.ca))
    deadline = time.monotonic() + wait_s
    while True:
        if kit.superlink.pid() is None:
            raise DeploymentError(f"the SuperLink exited at start: {last_error(kit.superlink)} "
                                  f"(log: {kit.superlink.log_file})")
        try:
            with socket.create_connection((host, port), timeout=2) as raw, \
                    context.wrap_socket(raw, server_hostname=host):
                return
        except OSError:
            if time.monotonic() > deadline:
                kit.superlink.stop()
                raise DeploymentError(f"the SuperLink did not accept TLS connections on "
                                      f"{host}:{port} within {wait_s:g} s (log: "
                                      f"{kit.superlink.log_file})") from None
            time.sleep(0.5)


def last_error(service: Service) -> str:
    """The last line of a process's log that reports an error (or its last line)."""
    lines = [line.strip() for line in service.log_text().splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line or "Error" in line]
    return (errors or lines or ["no output"])[-1]


def register_node(kit: ServerKit, public_key: Path, name: str | None = None) -> int:
    """Register a hospital's ``node.pub`` with the running SuperLink; return its node id."""
    check_public_key(public_key)
    args = ["supernode", "register", str(Path(public_key).resolve()), CONNECTION]
    answer = flwr_json(args + (["--name", name] if name else []), kit.flwr_home)
    return int(answer["node-id"])


def list_nodes(kit: ServerKit) -> list[dict[str, Any]]:
    """The registered nodes and their status (``flwr supernode ls``)."""
    return list(flwr_json(["supernode", "ls", CONNECTION], kit.flwr_home)["nodes"])


def stop_superlink(kit: ServerKit) -> bool:
    """Stop the kit's SuperLink by its PID; False when none ran."""
    return kit.superlink.stop()
