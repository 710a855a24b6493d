"""The coordinating center's kit: one folder with the TLS material, Flower's home and the
SuperLink's state, logs and PIDs.

``KIT/tls/`` (``ca.crt``, ``ca.key``, ``server.pem``, ``server.key``), ``KIT/flwr-home/``
(``config.toml`` with the connection ``fedecg``), ``KIT/superlink.db`` (the SuperLink's
state, so registered nodes survive a restart), ``KIT/logs/{superlink,gateway}.log``,
``KIT/{superlink,gateway}.pid`` and ``KIT/server.json`` (the addresses it serves).

Only the Fleet API faces the network. The SuperLink listens on loopback (its Control and
ServerAppIo APIs have no authentication in open-source Flower), and the Fleet gateway
(``fedecg.deploy.gateway``) listens on the address hospitals dial and forwards only Fleet calls.
The center's own ``flwr`` commands (register, list, submit) use the loopback address. The kit
folder is private to its owner (0700).
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import ssl
import sys
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
from fedecg.deploy.flower import Service, flwr_json, write_connection
from fedecg.deploy.node_keys import check_public_key
from fedecg.errors import DeploymentError
from fedecg.federated.flower_env import flower_env
from fedecg.io import PRIVATE, OutputKind, atomic_write_json, claim_output, mark_output, private_dir

CONNECTION = "fedecg"
SERVER_FILE = "server.json"
LOOPBACK_NAMES = ("127.0.0.1", "localhost")


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
        """The SuperLink process (on loopback)."""
        return Service(Path(self.folder), "superlink")

    @property
    def gateway(self) -> Service:
        """The Fleet gateway process (on the address hospitals dial)."""
        return Service(Path(self.folder), "gateway")

    def address(self) -> str:
        """The address hospitals dial: the Fleet gateway's (from ``server.json``)."""
        return str(self._served()["address"])

    def control_address(self) -> str:
        """The loopback address of the running SuperLink's own APIs (from ``server.json``)."""
        return str(self._served()["control"])

    def _served(self) -> dict[str, Any]:
        path = Path(self.folder) / SERVER_FILE
        if not path.is_file():
            raise DeploymentError(f"{self.folder}: no SuperLink was started from this kit; run "
                                  "`fedecg server start` first")
        return dict(json.loads(path.read_text()))


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` → ``(host, port)``, with a clear error."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise DeploymentError(f"address {address!r}: expected HOST:PORT, e.g. 127.0.0.1:9300")
    return host.strip("[]"), int(port)


def init_server(folder: Path, hosts: list[str], days: int = 365, renew: bool = False) -> ServerKit:
    """Create the kit's CA (once) and a server certificate covering ``hosts`` and loopback
    (where the center's own commands reach the SuperLink).

    ``renew`` keeps the CA (hospitals keep their ca.crt) and issues a new server certificate.
    """
    kit = ServerKit(Path(folder))
    validity = Validity(days=days)  # refuses --days < 1 before anything is written
    claim_output(kit.folder, OutputKind.SERVER_KIT, existing_ok=True)
    if kit.ca.exists() and not renew:
        raise DeploymentError(f"{kit.ca} exists: this kit already has a CA; pass --renew to "
                              "issue a new server certificate with the same CA")
    private_dir(kit.folder)
    mark_output(kit.folder, OutputKind.SERVER_KIT)
    if not kit.ca.exists():
        create_ca(kit.tls)
    covered = list(dict.fromkeys([*hosts, *LOOPBACK_NAMES]))
    issue_server_cert(kit.tls, covered, validity)
    return kit


def start_superlink(kit: ServerKit, address: str, bind: str | None = None,
                    control: str | None = None, wait_s: float = 60.0) -> int:
    """Start ``flower-superlink`` on loopback and the Fleet gateway on ``address``; return the
    SuperLink's PID once both accept TLS.

    ``address`` is what hospitals dial (the certificate must cover its host); ``bind`` the
    interface the gateway listens on (default: the address's host); ``control`` the loopback
    ``HOST:PORT`` of the SuperLink itself (default: a free port on 127.0.0.1).
    """
    host, port = split_address(address)
    check_server_cert(kit.tls, host)
    control = control or f"127.0.0.1:{_free_port()}"
    local_host, local_port = loopback_address(control)
    check_server_cert(kit.tls, local_host)
    private_dir(kit.folder)
    database = Path(kit.folder) / "superlink.db"
    database.touch(mode=PRIVATE, exist_ok=True)
    database.chmod(PRIVATE)  # SQLite gives its -wal/-shm files the database's mode
    command = ["flower-superlink", "--ssl-ca-certfile", str(kit.ca),
               "--ssl-certfile", str(kit.tls / SERVER_CERT),
               "--ssl-keyfile", str(kit.tls / SERVER_KEY), "--enable-supernode-auth",
               "--disable-runtime-dependency-installation", "--host", local_host,
               "--port", str(local_port), "--database", str(database)]
    pid = kit.superlink.start(command, flower_env(kit.flwr_home))
    _await_tls(kit, kit.superlink, local_host, local_port, wait_s)
    gateway = [sys.executable, "-m", "fedecg.deploy.gateway", "--listen",
               f"{bind or host}:{port}", "--upstream", control, "--ca", str(kit.ca),
               "--cert", str(kit.tls / SERVER_CERT), "--key", str(kit.tls / SERVER_KEY)]
    kit.gateway.start(gateway, dict(os.environ))
    _await_tls(kit, kit.gateway, host, port, wait_s)
    write_connection(kit.flwr_home, CONNECTION, control, kit.ca)
    atomic_write_json(Path(kit.folder) / SERVER_FILE,
                      {"address": address, "control": control, "pid": pid,
                       "command": command, "gateway": gateway})
    return pid


def loopback_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` of the SuperLink's own APIs, refused unless HOST is loopback: its Control
    API would let anyone who can reach it and holds ca.crt run code at every site."""
    host, port = split_address(address)
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise DeploymentError(
            f"control address {address}: the SuperLink's Control API has no authentication "
            "in open-source Flower, so it must listen on loopback (e.g. 127.0.0.1:9301); "
            "run `fedecg server` commands on the center's machine, or reach it remotely "
            "through ssh (ssh -L 9301:127.0.0.1:9301 center)")
    return host, port


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _await_tls(kit: ServerKit, service: Service, host: str, port: int, wait_s: float) -> None:
    context = ssl.create_default_context(cafile=str(kit.ca))
    deadline = time.monotonic() + wait_s
    while True:
        if service.pid() is None:
            stop_superlink(kit)
            raise DeploymentError(f"the {service.name} exited at start: {last_error(service)} "
                                  f"(log: {service.log_file})")
        try:
            with socket.create_connection((host, port), timeout=2) as raw, \
                    context.wrap_socket(raw, server_hostname=host):
                return
        except OSError:
            if time.monotonic() > deadline:
                stop_superlink(kit)
                raise DeploymentError(f"the {service.name} did not accept TLS connections on "
                                      f"{host}:{port} within {wait_s:g} s (log: "
                                      f"{service.log_file})") from None
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
    """Stop the kit's gateway and SuperLink by their PIDs; False when neither ran."""
    stopped_gateway = kit.gateway.stop()
    return kit.superlink.stop() or stopped_gateway
