"""TLS for a federation: a private CA, the SuperLink's certificate, and checks that explain.

The coordinating center creates a CA once (``create_ca``) and a server certificate whose
subject alternative names cover every host name and address the hospitals will dial
(``issue_server_cert``); hospitals receive only ``ca.crt``. Keys are written 0600 into a
folder only its owner may enter (0700). ``check_server_cert`` and ``check_ca`` say in one
line what is wrong (missing, unreadable, expired, not covering an address, not issued by the
CA, key not matching) before any Flower process starts.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedecg.errors import DeploymentError, InputFileError
from fedecg.io import PRIVATE, atomic_write_bytes, private_dir

CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVER_CERT, SERVER_KEY = "server.pem", "server.key"


@dataclass(frozen=True)
class Validity:
    """When a certificate is valid: ``days`` from ``start`` (default: now)."""

    days: int = 365
    start: dt.datetime | None = None

    def __post_init__(self) -> None:
        check_days(self.days)

    def window(self) -> tuple[dt.datetime, dt.datetime]:
        """(not before, not after)."""
        start = self.start or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        return start, start + dt.timedelta(days=self.days)


def check_days(days: int) -> None:
    """Refuse a certificate lifetime of less than one day (``--days 0`` or negative)."""
    if days < 1:
        raise DeploymentError(f"certificate validity --days {days}: expected at least 1 day "
                              "(e.g. --days 365)")


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    private_dir(path.parent)
    atomic_write_bytes(path, key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()), PRIVATE)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    atomic_write_bytes(path, cert.public_bytes(serialization.Encoding.PEM))


def create_ca(folder: Path, name: str = "fedecg federation CA",
              validity: Validity = Validity(days=3650)) -> Path:
    """Write ``ca.crt`` and ``ca.key`` (keep it offline) into ``folder``; return the cert path."""
    folder = Path(folder)
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    not_before, not_after = validity.window()
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    _write_key(folder / CA_KEY, key)
    _write_cert(folder / CA_CERT, cert)
    return folder / CA_CERT


def san_entries(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """Subject alternative names: IP addresses as such, anything else as a DNS name."""
    entries: list[x509.GeneralName] = []
    for host in hosts:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return entries


def issue_server_cert(folder: Path, hosts: Sequence[str],
                      validity: Validity = Validity()) -> Path:
    """Write ``server.pem``/``server.key`` signed by the CA in ``folder``, covering ``hosts``."""
    folder = Path(folder)
    if not hosts:
        raise DeploymentError("a server certificate needs at least one --host: the name or "
                              "address the hospitals connect to (e.g. 127.0.0.1, link.example)")
    ca_cert, ca_key = load_cert(folder / CA_CERT), _load_key(folder / CA_KEY)
    key = _key()
    not_before, not_after = validity.window()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(san_entries(hosts)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_key(folder / SERVER_KEY, key)
    _write_cert(folder / SERVER_CERT, cert)
    return folder / SERVER_CERT


def load_cert(path: Path) -> x509.Certificate:
    """A PEM certificate, or a ``DeploymentError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: certificate not found; create it with "
                             "`fedecg server init` (hospitals get ca.crt from their "
                             "coordinating center)")
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as exc:
        raise DeploymentError(f"{path}: not a PEM certificate ({exc})") from None


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: private key not found")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise DeploymentError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise DeploymentError(f"{path}: expected an elliptic-curve key, got {type(key).__name__}")
    return key


def covered_names(cert: x509.Certificate) -> list[str]:
    """The host names and addresses a certificate's SANs cover."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n) for n in sans.get_values_for_type(x509.DNSName)] + [
        str(a) for a in sans.get_values_for_type(x509.IPAddress)]


def check_current(cert: x509.Certificate, path: Path,
                  now: dt.datetime | None = None) -> None:
    """Refuse a certificate that has expired or is not yet valid."""
    now = now or dt.datetime.now(dt.UTC)
    if cert.not_valid_after_utc <= now:
        raise DeploymentError(f"{path}: certificate expired on "
                              f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; issue a new one "
                              "(`fedecg server init --renew`)")
    if cert.not_valid_before_utc > now:
        raise DeploymentError(f"{path}: certificate is not valid before "
                              f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC; check the clock")


def check_ca(path: Path) -> x509.Certificate:
    """The CA certificate at ``path``, current and marked as a CA."""
    cert = load_cert(path)
    check_current(cert, Path(path))
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise DeploymentError(f"{path}: not a CA certificate; pass the federation's ca.crt")
    return cert


def check_server_cert(folder: Path, host: str) -> None:
    """The SuperLink's certificate in ``folder``: current, issued by the CA beside it, its key
    matching, and covering ``host`` (the address the SuperLink serves and hospitals dial)."""
    folder = Path(folder)
    ca = check_ca(folder / CA_CERT)
    cert = load_cert(folder / SERVER_CERT)
    check_current(cert, folder / SERVER_CERT)
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise DeploymentError(f"{folder / SERVER_CERT}: not issued by {folder / CA_CERT} "
                              f"({type(exc).__name__}); issue it again with "
                              "`fedecg server init --renew`") from None
    key = _load_key(folder / SERVER_KEY)
    if key.public_key().public_numbers() != cert.public_key().public_numbers():
        raise DeploymentError(f"{folder / SERVER_KEY} does not belong to "
                              f"{folder / SERVER_CERT}; issue both again")
    names = covered_names(cert)
    if host.lower() not in {name.lower() for name in names}:
        raise DeploymentError(f"{folder / SERVER_CERT} does not cover {host!r} (it covers "
                              f"{', '.join(names) or 'nothing'}); issue it again with "
                              f"`fedecg server init --renew --host {host}`")
