"""The Fleet gateway forwards only the Fleet API; the SuperLink's own APIs stay on loopback."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from fedecg.deploy.certs import SERVER_CERT, covered_names, create_ca, load_cert
from fedecg.deploy.gateway import create_gateway, is_fleet_call
from fedecg.deploy.superlink import init_server, loopback_address, start_superlink
from fedecg.errors import DeploymentError


@pytest.mark.parametrize(("method", "path", "forwarded"), [
    ("POST", "/v1/fleet/pull-messages", True),
    ("POST", "/v1/fleet/register-node", True),
    ("GET", "/v1/fleet/pull-messages", False),
    ("POST", "/v1/control/list-runs", False),
    ("POST", "/v1/control/register-node", False),
    ("POST", "/v1/control/start-run", False),
    ("POST", "/v1/runtime/pull-messages", False),
    ("POST", "/v1/fleet/../control/list-runs", False),
    ("POST", "/v1/fleet/%2e%2e/control/list-runs", False),
    ("POST", "/v1/fleet/", False),
    ("GET", "/docs", False),
])
def test_only_fleet_calls_are_forwarded(method, path, forwarded):
    assert is_fleet_call(method, path) is forwarded


@pytest.fixture
def gateway(tmp_path):
    ca = create_ca(tmp_path / "tls")
    with TestClient(create_gateway("127.0.0.1:1", str(ca))) as client:  # nothing upstream
        yield client


def test_the_gateway_refuses_the_control_api_with_a_reason(gateway, caplog):
    answer = gateway.post("/v1/control/list-runs", content=b"")
    assert answer.status_code == 403
    assert "serves only the Fleet API" in answer.json()["detail"]
    assert "refused POST /v1/control/list-runs" in caplog.text


def test_a_fleet_call_without_a_superlink_is_a_502_not_a_crash(gateway):
    answer = gateway.post("/v1/fleet/get-run", content=b"\x00")
    assert answer.status_code == 502


@pytest.mark.parametrize("address", ["127.0.0.1:9301", "localhost:9301", "[::1]:9301"])
def test_loopback_control_addresses_are_accepted(address):
    assert loopback_address(address)[1] == 9301


@pytest.mark.parametrize("address", ["0.0.0.0:9301", "10.20.0.5:9301", "link.org:9301"])
def test_a_control_address_off_loopback_is_refused_before_anything_starts(tmp_path, address):
    kit = init_server(tmp_path / "center", ["127.0.0.1"])
    with pytest.raises(DeploymentError, match="must listen on loopback"):
        start_superlink(kit, "127.0.0.1:9300", control=address)
    assert kit.superlink.pid() is None and kit.gateway.pid() is None


def test_the_kit_is_private_and_its_certificate_covers_loopback(tmp_path):
    kit = init_server(tmp_path / "center", ["link.hospital-net.org"])
    assert kit.folder.stat().st_mode & 0o777 == 0o700
    names = covered_names(load_cert(kit.tls / SERVER_CERT))
    assert {"link.hospital-net.org", "127.0.0.1", "localhost"} <= set(names)
