"""PRELOGIN and LOGIN7 ([MS-TDS] 2.2.6.4, 2.2.6.5): what a client sends to log in and what the server
answers, plus the client side of both (tests, health checks)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Optional

from .results import Message
from .tds import (
    DEFAULT_PACKET_SIZE,
    ENCRYPT_NOT_SUP,
    ENV_DATABASE,
    ENV_LANGUAGE,
    ENV_PACKET_SIZE,
    FEATURE_FEDAUTH,
    FEATURE_TERMINATOR,
    FEATURE_UTF8_SUPPORT,
    KNOWN_TDS_VERSIONS,
    MAX_PACKET_SIZE,
    MIN_PACKET_SIZE,
    PL_ENCRYPTION,
    PL_INSTOPT,
    PL_MARS,
    PL_TERMINATOR,
    PL_THREADID,
    PL_VERSION,
    PROG_NAME,
    SERVER_VERSION,
    TDS72,
    TDS74,
    TOKEN_FEATUREEXTACK,
    TOKEN_LOGINACK,
    ProtocolError,
    b_varchar,
    done,
    envchange_collation,
    envchange_text,
    message_token,
)

# PRELOGIN option FEDAUTHREQUIRED ([MS-TDS] 2.2.6.5): a client able to send a federated-authentication
# token offers it with 0x01; the server's answer 0x01 tells it to set fFedAuthEcho in LOGIN7's FEDAUTH.
PL_FEDAUTHREQUIRED = 0x06
# bFedAuthLibrary of the LOGIN7 FEDAUTH feature ([MS-TDS] 2.2.6.4): 0x01 = security token (an Entra ID
# access token the client already holds). 0x02 (ADAL workflow) needs a FEDAUTHINFO exchange: not served.
FEDAUTH_LIBRARY_SECURITYTOKEN = 0x01

_H = struct.Struct("<H")
_I = struct.Struct("<I")


def _token(token: int, body: bytes) -> bytes:
    return bytes((token,)) + _H.pack(len(body)) + body


# -- PRELOGIN -----------------------------------------------------------------------------------------


def parse_prelogin(payload: bytes) -> dict[int, bytes]:
    """Option token -> option data of a client PRELOGIN message."""
    options: dict[int, bytes] = {}
    pos = 0
    while pos < len(payload):
        token = payload[pos]
        if token == PL_TERMINATOR:
            return options
        if pos + 5 > len(payload):
            break
        offset, length = struct.unpack_from(">HH", payload, pos + 1)
        if offset + length > len(payload):
            raise ProtocolError("PRELOGIN option points past the end of the message")
        options[token] = payload[offset:offset + length]
        pos += 5
    raise ProtocolError("PRELOGIN without terminator")


def build_prelogin_response(encryption: int = ENCRYPT_NOT_SUP, fedauth_required: bool = False) -> bytes:
    """The server's PRELOGIN answer: version, ENCRYPT_NOT_SUP (no TLS), no instance, no MARS; plus
    FEDAUTHREQUIRED 0x01 when the client offered a federated-authentication token ([MS-TDS] 2.2.6.5)."""
    major, minor, build = SERVER_VERSION
    options = [
        (PL_VERSION, struct.pack(">BBHH", major, minor, build, 0)),
        (PL_ENCRYPTION, bytes((encryption,))),
        (PL_INSTOPT, b"\x00"),
        (PL_THREADID, b""),
        (PL_MARS, b"\x00"),
    ]
    if fedauth_required:
        options.append((PL_FEDAUTHREQUIRED, b"\x01"))
    offset = len(options) * 5 + 1
    head = bytearray()
    body = bytearray()
    for token, data in options:
        head += struct.pack(">BHH", token, offset + len(body), len(data))
        body += data
    head.append(PL_TERMINATOR)
    return bytes(head + body)


# -- LOGIN7 -------------------------------------------------------------------------------------------


@dataclass
class Login7:
    """What the server needs from a LOGIN7 record."""

    tds_version: int
    packet_size: int
    client_pid: int
    hostname: str
    user: str
    password: str
    app_name: str
    server_name: str
    library: str
    language: str
    database: str
    features: dict[int, bytes] = field(default_factory=dict)  # FeatureExt id -> data (TDS 7.4)

    def __repr__(self) -> str:  # never show the password
        return (f"Login7(tds_version=0x{self.tds_version:08X}, packet_size={self.packet_size}, "
                f"user={self.user!r}, app_name={self.app_name!r}, database={self.database!r})")


def decode_password(data: bytes) -> str:
    """Undo LOGIN7's password scrambling: XOR each byte with 0xA5, then swap its nibbles."""
    out = bytearray(len(data))
    for i, b in enumerate(data):
        b ^= 0xA5
        out[i] = ((b & 0x0F) << 4) | (b >> 4)
    return out.decode("utf-16-le", errors="replace")


def encode_password(password: str) -> bytes:
    """The client side of :func:`decode_password` (used by tests)."""
    out = bytearray()
    for b in password.encode("utf-16-le"):
        out.append((((b & 0x0F) << 4) | (b >> 4)) ^ 0xA5)
    return bytes(out)


def parse_login7(payload: bytes) -> Login7:
    """Decode the fixed part and the offset/length table of a LOGIN7 record."""
    if len(payload) < 94:
        raise ProtocolError("LOGIN7 record too short")
    (_length, tds_version, packet_size, _prog_ver, client_pid, _conn_id) = struct.unpack_from(
        "<IIIIII", payload, 0)

    def field(index: int, password: bool = False) -> str:
        offset, chars = struct.unpack_from("<HH", payload, 36 + 4 * index)
        raw = payload[offset:offset + 2 * chars]
        if len(raw) != 2 * chars:
            raise ProtocolError("LOGIN7 field points past the end of the record")
        return decode_password(raw) if password else raw.decode("utf-16-le", errors="replace")

    features: dict[int, bytes] = {}
    option_flags3 = payload[27]
    if option_flags3 & 0x10 and tds_version >= TDS74:  # fExtension: ibExtension points at a DWORD offset
        ext_offset, ext_len = struct.unpack_from("<HH", payload, 36 + 4 * 5)
        if ext_len >= 4 and ext_offset + 4 <= len(payload):
            features = parse_feature_ext(payload, _I.unpack_from(payload, ext_offset)[0])
    return Login7(
        features=features,
        tds_version=tds_version,
        packet_size=packet_size,
        client_pid=client_pid,
        hostname=field(0),
        user=field(1),
        password=field(2, password=True),
        app_name=field(3),
        server_name=field(4),
        library=field(6),
        language=field(7),
        database=field(8),
    )


def parse_feature_ext(payload: bytes, pos: int) -> dict[int, bytes]:
    """FeatureId (BYTE), FeatureDataLen (DWORD), data ... up to the 0xFF terminator."""
    features: dict[int, bytes] = {}
    while pos < len(payload):
        feature = payload[pos]
        if feature == FEATURE_TERMINATOR:
            return features
        if pos + 5 > len(payload):
            break
        length = _I.unpack_from(payload, pos + 1)[0]
        data = payload[pos + 5:pos + 5 + length]
        if len(data) != length:
            break
        features[feature] = data
        pos += 5 + length
    raise ProtocolError("LOGIN7 feature extension block without terminator")


@dataclass
class FedAuth:
    """LOGIN7's FEDAUTH feature ([MS-TDS] 2.2.6.4): Options (bit 0 fFedAuthEcho, bits 1-7
    bFedAuthLibrary), then for the security-token library a DWORD length, the token (UTF-16LE) and an
    optional 32-byte nonce."""

    library: int
    echo: bool
    token: str

    def __repr__(self) -> str:  # never show the token
        return f"FedAuth(library={self.library}, echo={self.echo}, token=<{len(self.token)} chars>)"


def parse_fedauth(data: bytes) -> FedAuth:
    """Decode the FEDAUTH feature data; a malformed one is a protocol error."""
    if not data:
        raise ProtocolError("LOGIN7 FEDAUTH feature without its Options byte")
    options = data[0]
    library, echo = options >> 1, bool(options & 0x01)
    token = ""
    if library == FEDAUTH_LIBRARY_SECURITYTOKEN:
        if len(data) < 5:
            raise ProtocolError("LOGIN7 FEDAUTH security token without its length")
        length = _I.unpack_from(data, 1)[0]
        raw = data[5:5 + length]
        if len(raw) != length or len(data) - 5 - length not in (0, 32):  # then nothing or a nonce
            raise ProtocolError("LOGIN7 FEDAUTH token length does not match the feature data")
        token = raw.decode("utf-16-le", errors="replace")
    return FedAuth(library, echo, token)


def feature_ext_ack(features: dict[int, bytes]) -> bytes:
    """FEATUREEXTACK for the features the stand-in acknowledges: UTF-8 support (SQL Server 2019+ acks it
    with 1) and an accepted FEDAUTH (security-token library without a nonce: empty FeatureAckData,
    [MS-TDS] 2.2.7.11). Features a server does not ack are off for the client."""
    acks = b""
    if FEATURE_UTF8_SUPPORT in features:
        acks += bytes((FEATURE_UTF8_SUPPORT,)) + _I.pack(1) + b"\x01"
    if FEATURE_FEDAUTH in features:
        acks += bytes((FEATURE_FEDAUTH,)) + _I.pack(0)
    if not acks:
        return b""
    return bytes((TOKEN_FEATUREEXTACK,)) + acks + bytes((FEATURE_TERMINATOR,))


def negotiate_tds_version(client_version: int) -> int:
    """The version LOGINACK reports: the client's own if it is one we know, else the nearest lower."""
    if client_version in KNOWN_TDS_VERSIONS:
        return client_version
    best = TDS72
    for version in KNOWN_TDS_VERSIONS:
        if version <= client_version:
            best = version
    return best


def negotiate_packet_size(requested: int) -> int:
    """The packet size both sides then use: the client's request, clamped to what SQL Server accepts."""
    if requested == 0:
        return DEFAULT_PACKET_SIZE
    return max(MIN_PACKET_SIZE, min(MAX_PACKET_SIZE, requested))


# -- the answer to a LOGIN7 ---------------------------------------------------------------------------


def loginack(tds_version: int) -> bytes:
    major, minor, build = SERVER_VERSION
    body = (b"\x01" + struct.pack(">I", tds_version) + b_varchar(PROG_NAME)
            + struct.pack(">BBH", major, minor, build))
    return _token(TOKEN_LOGINACK, body)


def login_response(database: str, packet_size: int, tds_version: int, server_name: str,
                   features: Optional[dict[int, bytes]] = None) -> bytes:
    """Every token SQL Server sends after a successful LOGIN7, in SQL Server's order."""
    return b"".join((
        envchange_text(ENV_DATABASE, database, "master"),
        message_token(Message(5701, 0, 2, f"Changed database context to '{database}'."), server_name),
        envchange_collation(),
        envchange_text(ENV_LANGUAGE, "us_english", ""),
        message_token(Message(5703, 0, 1, "Changed language setting to us_english."), server_name),
        loginack(tds_version),
        feature_ext_ack(features or {}),
        envchange_text(ENV_PACKET_SIZE, str(packet_size), str(packet_size)),
        done(),
    ))


# -- client side (tests, health checks) -------------------------------------------------------------


def build_prelogin_request(encryption: int = ENCRYPT_NOT_SUP) -> bytes:
    """A minimal client PRELOGIN (same layout as the server's answer)."""
    return build_prelogin_response(encryption)


def build_login7(user: str, password: str, database: str = "", app_name: str = "beaker-mssql",
                 tds_version: int = TDS74, packet_size: int = DEFAULT_PACKET_SIZE,
                 hostname: str = "localhost") -> bytes:
    """A LOGIN7 record as a TDS 7.2+ client sends it (what :func:`parse_login7` reads back)."""
    fields = [hostname, user, None, app_name, "", "", "beaker-mssql", "", database]
    fixed = 94
    data = bytearray()
    table = bytearray()
    for index, value in enumerate(fields):
        if index == 2:
            raw = encode_password(password)
        elif index == 5:  # extension slot: unused
            table += struct.pack("<HH", fixed + len(data), 0)
            continue
        else:
            raw = (value or "").encode("utf-16-le")
        table += struct.pack("<HH", fixed + len(data), len(raw) // 2)
        data += raw
    table += b"\x00" * 6  # client id
    for _ in range(3):  # SSPI, attach db file, change password
        table += struct.pack("<HH", fixed + len(data), 0)
    table += b"\x00\x00\x00\x00"  # cbSSPILong
    head = struct.pack("<IIIIII", fixed + len(data), tds_version, packet_size, 7, 4242, 0)
    head += bytes((0xE0, 0x03, 0x00, 0x00)) + struct.pack("<iI", 0, 0x0409)
    record = head + bytes(table) + bytes(data)
    assert len(head) + len(table) == fixed
    return record
