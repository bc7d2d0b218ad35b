"""beaker_mssql.pytds_overrides: python-tds's login retries and host-name check, replaced only while our
own calls run (the module docstring says why). The end-to-end effects are in tests/test_failover.py (one
login attempt per connect) and tests/test_clients_python.py (TLS to the stand-in by IP address)."""

from __future__ import annotations

import datetime
import ipaddress
from typing import Any

import pytest

pytds = pytest.importorskip("pytds")
crypto = pytest.importorskip("OpenSSL.crypto")

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from beaker_mssql import pytds_overrides  # noqa: E402
from beaker_mssql.pytds_overrides import validate_host  # noqa: E402

_KEY = ec.generate_private_key(ec.SECP256R1())


def certificate(common_name: str, dns: tuple[str, ...] = (), ips: tuple[str, ...] = ()) -> Any:
    """A pyOpenSSL X509, as python-tds gets it from get_peer_certificate()."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(_KEY.public_key())
               .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1)))
    names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return crypto.X509.from_cryptography(builder.sign(_KEY, hashes.SHA256()))


AZURE = certificate("tr42.westeurope1-a.worker.database.windows.net",
                    dns=("*.database.windows.net", "*.westeurope1-a.worker.database.windows.net"))


@pytest.mark.parametrize(("cert", "host", "expected"), [
    (certificate("db.example.com"), "db.example.com", True),  # CN, python-tds's own rule
    (certificate("db.example.com"), "DB.Example.com.", True),  # case and the root dot do not matter
    (certificate("db.example.com"), "other.example.com", False),
    (AZURE, "myserver.database.windows.net", True),  # SAN wildcard: python-tds 1.17 crashed here
    (AZURE, "a.b.database.windows.net", False),  # a wildcard covers one label only
    (AZURE, "database.windows.net", False),
    (AZURE, "myserver.database.windows.net.evil.com", False),
    (certificate("localhost", dns=("localhost",), ips=("127.0.0.1",)), "127.0.0.1", True),
    (certificate("localhost", dns=("localhost",), ips=("127.0.0.1",)), "127.0.0.2", False),
    (certificate("localhost", dns=("127.0.0.1",)), "127.0.0.1", False),  # an IP must be an IPAddress entry
    (certificate("x", dns=("*.example.com",)), "example.com", False),
    (certificate("x", dns=("a*.example.com",)), "ab.example.com", False),  # partial wildcards: refused
])
def test_validate_host(cert, host, expected):
    assert validate_host(cert, host.encode("ascii")) is expected


def test_python_tds_keeps_its_own_helpers_outside_our_calls():
    calls: list[float] = []

    def work(timeout: float) -> str:
        calls.append(timeout)
        if len(calls) < 3:
            raise ConnectionRefusedError(111, "refused")
        return "connected"

    with pytds_overrides.active() as installed:
        assert installed
        with pytest.raises(ConnectionRefusedError):
            pytds.utils.exponential_backoff(work=work, ex_handler=lambda exc: None, max_time_sec=5,
                                            first_attempt_time_sec=0.001)
        assert calls == [5]  # one attempt, with the whole login timeout, its own error
        assert pytds.tls.validate_host(AZURE, b"myserver.database.windows.net") is True
    calls.clear()
    # Outside: python-tds's backoff retries as it always did (other pytds users are untouched).
    assert pytds.utils.exponential_backoff(work=work, ex_handler=lambda exc: None, max_time_sec=5,
                                           first_attempt_time_sec=0.001) == "connected"
    assert len(calls) == 3
