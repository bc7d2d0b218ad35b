"""TLS for the stand-in: PRELOGIN encryption negotiation and a TLS session run over memory buffers.

[MS-TDS] 2.2.6.5 / 3.3.5: encryption is agreed in PRELOGIN; the TLS handshake then travels inside
PRELOGIN (0x12) packets, after which TLS records go straight over TCP with the TDS packets inside
them. With *login-only* encryption (client and server both answered ENCRYPT_OFF) only the LOGIN7
message is encrypted; both sides drop TLS right after it, so the login reply is already plain.

The certificate is either one the caller names (``tls=(certfile, keyfile)``) or a self-signed one
made at start with ``cryptography`` (CN and SAN ``localhost`` / ``127.0.0.1``; its PEM is the CA file
a verifying client needs).
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
import ssl
import tempfile
from typing import Optional, Union

from . import tds

TlsOption = Union[bool, tuple[str, str], None]


def server_encryption_answer(client: Optional[int], tls_available: bool) -> int:
    """The ENCRYPTION byte of the server's PRELOGIN answer ([MS-TDS] 2.2.6.5 table).

    Without a certificate SQL Server answers ENCRYPT_NOT_SUP; a client that asked for ENCRYPT_ON then
    ends the connection itself. With one: ON -> ON (everything encrypted), OFF -> OFF (login only),
    NOT_SUP -> NOT_SUP (nothing encrypted).
    """
    if not tls_available:
        return tds.ENCRYPT_NOT_SUP
    if client in (tds.ENCRYPT_ON, tds.ENCRYPT_REQ):
        return tds.ENCRYPT_ON
    if client == tds.ENCRYPT_NOT_SUP:
        return tds.ENCRYPT_NOT_SUP
    return tds.ENCRYPT_OFF


class ServerCertificate:
    """The certificate and key files the stand-in serves TLS with (made or given), and its context."""

    def __init__(self, option: Union[bool, tuple[str, str]]) -> None:
        self._tmpdir: Optional[tempfile.TemporaryDirectory[str]] = None
        if isinstance(option, tuple):
            self.certfile, self.keyfile = option
            for path in option:
                if not os.path.isfile(path):
                    raise ValueError(f"tls=(certfile, keyfile): {path!r} is not a file")
        else:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="standin-tls-")
            self.certfile = os.path.join(self._tmpdir.name, "standin-cert.pem")
            self.keyfile = os.path.join(self._tmpdir.name, "standin-key.pem")
            make_self_signed(self.certfile, self.keyfile)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # TLS 1.2 at most: SQL Server 2022+ and Azure SQL speak TLS 1.3 only with TDS 8.0 (strict
        # encryption, TLS before PRELOGIN), which the stand-in does not serve; inside TDS 7.x PRELOGIN
        # packets they negotiate TLS 1.2 (learn.microsoft.com/en-us/sql/relational-databases/security/
        # networking/tls-1-3: "support TLS 1.3 when TDS 8.0 is used"). Measured: ODBC Driver 18 (in
        # mssql-python) sends its TLS 1.3 Finished outside a PRELOGIN packet and the login hangs.
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.num_tickets = 0  # no TLS 1.3 session tickets, should a later change allow 1.3 again
        context.load_cert_chain(self.certfile, self.keyfile)
        self.context = context

    @property
    def ca_file(self) -> str:
        """The PEM a client trusts to verify the stand-in (the certificate itself when self-signed)."""
        return self.certfile

    def close(self) -> None:
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None


def make_self_signed(certfile: str, keyfile: str, hostname: str = "localhost") -> None:
    """A self-signed EC P-256 certificate for ``hostname`` and 127.0.0.1, valid for a year."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError as exc:  # pragma: no cover - cryptography is in the test extra
        raise RuntimeError("SQLServerStandIn(tls=True) makes its certificate with the 'cryptography' "
                           "package: pip install cryptography, or pass tls=(certfile, keyfile)") from exc
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(days=1))
        .not_valid_after(now + _dt.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    with open(keyfile, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(certfile, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


class TlsChannel:
    """One connection's server-side TLS session over memory BIOs (the socket stays the server's)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_side=True)
        self.established = False
        self.eof = False

    def handshake(self, records: bytes) -> bytes:
        """Feed the client's handshake bytes; returns what to send back (wrapped in PRELOGIN packets)."""
        self._in.write(records)
        try:
            self._obj.do_handshake()
            self.established = True
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            raise tds.ProtocolError(f"TLS handshake failed: {exc}") from exc
        return self._out.read()

    def decrypt(self, raw: bytes) -> bytes:
        """TLS records from the socket -> the TDS bytes inside (possibly none yet)."""
        self._in.write(raw)
        parts: list[bytes] = []
        while True:
            try:
                data = self._obj.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.eof = True
                break
            except ssl.SSLError as exc:
                raise tds.ProtocolError(f"TLS record error: {exc}") from exc
            if not data:
                self.eof = True
                break
            parts.append(data)
        return b"".join(parts)

    def encrypt(self, data: bytes) -> bytes:
        self._obj.write(data)
        return self._out.read()


__all__ = ["ServerCertificate", "TlsChannel", "TlsOption", "make_self_signed", "server_encryption_answer"]
