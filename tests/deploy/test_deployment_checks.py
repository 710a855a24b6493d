"""The deployment kits' checks: each bad input is one line saying what to fix.

Certificates, node keys and site stores are checked on files; the SuperLink's certificate is
checked against a real TLS server on 127.0.0.1 (a thread here), as a SuperNode would see it.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from pathlib import Path

import pytest
from builders.site_store import SCHEMA, make_store
from typer.testing import CliRunner

from fedecg.cli import app
from fedecg.config.federated import StudyConfig
from fedecg.deploy.certs import CA_CERT, SERVER_CERT, SERVER_KEY, Validity, check_server_cert
from fedecg.deploy.node_keys import check_node_key, check_public_key, create_node_keys
from fedecg.deploy.superlink import init_server
from fedecg.deploy.supernode import check_link, check_store
from fedecg.errors import DeploymentError, FedecgError

runner = CliRunner()


@pytest.fixture
def kit(tmp_path):
    return init_server(tmp_path / "center", ["127.0.0.1", "localhost"])


def test_the_server_certificate_covers_exactly_its_hosts(kit):
    check_server_cert(kit.tls, "127.0.0.1")
    check_server_cert(kit.tls, "LOCALHOST")
    with pytest.raises(DeploymentError, match=r"does not cover '10\.0\.0\.7' \(it covers "
                                              r"localhost, 127\.0\.0\.1\).*--host 10\.0\.0\.7"):
        check_server_cert(kit.tls, "10.0.0.7")


def test_renewing_keeps_the_ca_that_hospitals_hold(kit):
    ca, cert = kit.ca.read_bytes(), (kit.tls / SERVER_CERT).read_bytes()
    with pytest.raises(DeploymentError, match="--renew"):
        init_server(kit.folder, ["127.0.0.1"])
    init_server(kit.folder, ["10.0.0.7"], renew=True)
    assert kit.ca.read_bytes() == ca and (kit.tls / SERVER_CERT).read_bytes() != cert
    check_server_cert(kit.tls, "10.0.0.7")


def test_an_expired_or_foreign_server_certificate_is_refused(kit, tmp_path):
    from fedecg.deploy.certs import issue_server_cert

    past = Validity(days=1, start=dt.datetime.now(dt.UTC) - dt.timedelta(days=10))
    issue_server_cert(kit.tls, ["127.0.0.1"], past)
    with pytest.raises(DeploymentError, match=r"server\.pem: certificate expired on .*renew"):
        check_server_cert(kit.tls, "127.0.0.1")
    other = init_server(tmp_path / "other", ["127.0.0.1"])
    (kit.tls / SERVER_CERT).write_bytes((other.tls / SERVER_CERT).read_bytes())
    with pytest.raises(DeploymentError, match=r"not issued by .*ca\.crt"):
        check_server_cert(kit.tls, "127.0.0.1")
    (kit.tls / CA_CERT).unlink()
    with pytest.raises(FedecgError, match=r"ca\.crt: certificate not found"):
        check_server_cert(kit.tls, "127.0.0.1")


def test_node_keys_are_made_once_and_checked(tmp_path):
    public = create_node_keys(tmp_path / "node")
    check_node_key(tmp_path / "node" / "node.key")
    check_public_key(public)
    assert (tmp_path / "node" / "node.key").stat().st_mode & 0o777 == 0o600
    with pytest.raises(DeploymentError, match="already has an identity"):
        create_node_keys(tmp_path / "node")
    (tmp_path / "bad.key").write_text("not a key")
    with pytest.raises(DeploymentError, match="not an unencrypted OpenSSH private key"):
        check_node_key(tmp_path / "bad.key")
    with pytest.raises(FedecgError, match=r"node\.pub that `fedecg node keygen` wrote"):
        check_public_key(tmp_path / "missing.pub")


def test_a_wrong_data_dir_and_an_incompatible_store_are_one_line_each(tmp_path):
    with pytest.raises(DeploymentError, match=r"data-dir .*nowhere: no site store here"):
        check_store(tmp_path / "nowhere")
    study = StudyConfig.model_validate(
        {"data": {"deployed": {"sites": 2, "prepare": SCHEMA.model_dump(mode="json")}}})
    good = make_store(tmp_path / "good", n_patients=4, schema=SCHEMA)
    assert check_store(good, study).manifest.n_records == 12
    other = SCHEMA.model_copy(update={"waveform": SCHEMA.waveform.model_copy(
        update={"fs": 50.0})})
    bad = make_store(tmp_path / "bad", n_patients=4, schema=other)
    with pytest.raises(DeploymentError, match=r"does not match the study \(fs: 100\.0 vs "
                                              r"50\.0; n_samples: 200 vs 100"):
        check_store(bad, study)


class TlsServer:
    """A TLS listener on 127.0.0.1 presenting the kit's server certificate."""

    def __init__(self, tls: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(tls / SERVER_CERT, tls / SERVER_KEY)
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(connection, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

    def close(self) -> None:
        self.socket.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the thread
        self.socket.close()
        self.thread.join(timeout=5)


def test_the_superlink_certificate_is_verified_as_a_supernode_would(kit, tmp_path):
    from fedecg.deploy.certs import Validity, issue_server_cert

    issue_server_cert(kit.tls, ["127.0.0.1"], Validity())  # covers the address, not "localhost"
    server = TlsServer(kit.tls)
    try:
        check_link(f"127.0.0.1:{server.port}", kit.ca)
        with pytest.raises(DeploymentError, match="does not cover this address"):
            check_link(f"localhost:{server.port}", kit.ca)
        with pytest.raises(DeploymentError, match=r"pass the ca\.crt"):
            check_link(f"127.0.0.1:{server.port}", None)
        foreign = init_server(tmp_path / "foreign", ["127.0.0.1"])
        with pytest.raises(DeploymentError, match=r"not signed by .*foreign"):
            check_link(f"127.0.0.1:{server.port}", foreign.ca)
    finally:
        server.close()
    with pytest.raises(DeploymentError, match="unreachable"):
        check_link(f"127.0.0.1:{server.port}", kit.ca)


def test_an_expired_superlink_certificate_is_named(kit):
    from fedecg.deploy.certs import issue_server_cert

    past = Validity(days=1, start=dt.datetime.now(dt.UTC) - dt.timedelta(days=10))
    issue_server_cert(kit.tls, ["127.0.0.1"], past)
    server = TlsServer(kit.tls)
    try:
        with pytest.raises(DeploymentError, match="certificate has expired"):
            check_link(f"127.0.0.1:{server.port}", kit.ca)
    finally:
        server.close()


def test_the_cli_says_what_to_fix_in_one_line(kit, tmp_path):
    result = runner.invoke(app, ["server", "start", "--kit", str(kit.folder), "--address",
                                 "10.0.0.7:9300"])
    assert result.exit_code == 1
    assert "does not cover '10.0.0.7'" in result.output and "Traceback" not in result.output
    assert kit.superlink.pid() is None  # nothing was started
    create_node_keys(tmp_path / "node")
    result = runner.invoke(app, ["node", "check", "--kit", str(tmp_path / "node"),
                                 "--superlink", "127.0.0.1:1", "--ca", str(kit.ca),
                                 "--data-dir", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert "no site store here" in result.output
    assert result.output.count("error:") == 1


def test_a_hospital_prepares_with_the_study_settings_and_passes_its_check(tmp_path):
    from builders.raw_sites import make_generic_site

    from fedecg.data.store import SiteStore

    study = tmp_path / "study.yaml"
    study.write_text("data:\n  deployed:\n    sites: 2\n    prepare:\n"
                     "      waveform: {fs: 50, duration_s: 10}\n")
    site = make_generic_site(tmp_path)
    result = runner.invoke(app, ["prepare", "--site-dir", str(site), "--out",
                                 str(tmp_path / "store"), "--study", str(study)])
    assert result.exit_code == 0, result.output
    assert SiteStore.open(tmp_path / "store").manifest.fs == 50.0
    settings = StudyConfig.model_validate(
        {"data": {"deployed": {"sites": 2, "prepare": {"waveform": {"fs": 50}}}}})
    check_store(tmp_path / "store", settings)
    simulated = tmp_path / "simulated.yaml"
    simulated.write_text("data:\n  store: somewhere\n")
    result = runner.invoke(app, ["prepare", "--site-dir", str(site), "--out",
                                 str(tmp_path / "other"), "--study", str(simulated)])
    assert result.exit_code == 1 and "no data.deployed section" in result.output
