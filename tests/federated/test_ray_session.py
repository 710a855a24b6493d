"""``cluster_address``: which Ray cluster a simulation joins, refused in one line where nothing
answers (Ray itself would retry for minutes)."""

from __future__ import annotations

import socket

import pytest

from fedecg.errors import ConfigError
from fedecg.federated.ray_session import cluster_address


@pytest.fixture
def listening() -> str:
    """``127.0.0.1:PORT`` of a socket that accepts connections (the test's own)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield f"127.0.0.1:{server.getsockname()[1]}"


@pytest.fixture
def closed() -> str:
    """``127.0.0.1:PORT`` where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


def test_the_setting_wins_over_the_environment_and_none_means_a_private_session(
        listening, closed, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cluster_address(None) is None
    monkeypatch.setenv("RAY_ADDRESS", closed)
    assert cluster_address(listening) == listening
    monkeypatch.setenv("RAY_ADDRESS", listening)
    assert cluster_address(None) == listening


@pytest.mark.parametrize("from_env", [False, True])
def test_an_address_where_nothing_answers_is_refused_naming_its_source(closed, monkeypatch,
                                                                       from_env):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if from_env:
        monkeypatch.setenv("RAY_ADDRESS", closed)
    with pytest.raises(ConfigError) as refused:
        cluster_address(None if from_env else closed)
    source = "$RAY_ADDRESS" if from_env else "federation.ray_address"
    assert str(refused.value).startswith(f"{source} '{closed}': no Ray cluster answers there")
    assert f"ray start --head --port={closed.split(':')[1]}" in str(refused.value)


@pytest.mark.parametrize("address", ["auto", "ray://127.0.0.1:1"])
def test_addresses_that_ray_resolves_itself_are_passed_on(address, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cluster_address(address) == address
