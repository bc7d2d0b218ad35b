"""TDS 7.2-7.4 bytes for the stand-in: packets, PRELOGIN, LOGIN7 and the response tokens.

Only what pymssql (db-lib over FreeTDS) needs to log in, send SQL batches, cancel them and read typed
result sets. Everything here is a pure function of its arguments (no sockets, no SQL) so the server
can stay a thin loop and the encoding can be unit-tested byte for byte. References: [MS-TDS].
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Optional

from .results import MAX, Column, DatabaseChanged, Done, Message, ResultSet, SqlType

# -- packet types ([MS-TDS] 2.2.3.1.1) ---------------------------------------------------------------
PKT_SQL_BATCH = 0x01
PKT_RPC = 0x03
PKT_TABULAR = 0x04
PKT_ATTENTION = 0x06
PKT_BULK = 0x07
PKT_TRANSACTION_MANAGER = 0x0E
PKT_LOGIN7 = 0x10
PKT_SSPI = 0x11
PKT_PRELOGIN = 0x12

STATUS_EOM = 0x01
STATUS_RESETCONNECTION = 0x08  # [MS-TDS] 2.2.3.1.2: reset the session before running this request
STATUS_RESETCONNECTIONSKIPTRAN = 0x10  # ... but keep its open transaction
HEADER = struct.Struct(">BBHHBB")  # type, status, length (incl. header), spid, packet id, window
HEADER_SIZE = 8

# -- token types --------------------------------------------------------------------------------------
TOKEN_RETURNSTATUS = 0x79
TOKEN_COLMETADATA = 0x81
TOKEN_ERROR = 0xAA
TOKEN_INFO = 0xAB
TOKEN_RETURNVALUE = 0xAC
TOKEN_LOGINACK = 0xAD
TOKEN_FEATUREEXTACK = 0xAE
TOKEN_ROW = 0xD1
TOKEN_NBCROW = 0xD2
TOKEN_ENVCHANGE = 0xE3
TOKEN_DONE = 0xFD
TOKEN_DONEPROC = 0xFE
TOKEN_DONEINPROC = 0xFF

DONE_FINAL = 0x00
DONE_MORE = 0x01
DONE_ERROR = 0x02
DONE_INXACT = 0x04
DONE_COUNT = 0x10
DONE_ATTN = 0x20
DONE_SRVERROR = 0x100

CURCMD_SELECT = 0xC1
CURCMD_INSERT = 0xC3
CURCMD_DELETE = 0xC4
CURCMD_UPDATE = 0xC5

ENV_DATABASE = 1
ENV_LANGUAGE = 2
ENV_PACKET_SIZE = 4
ENV_COLLATION = 7
ENV_BEGIN_TRAN = 8
ENV_COMMIT_TRAN = 9
ENV_ROLLBACK_TRAN = 10
ENV_RESET_ACK = 18

# LOGIN7 feature extensions ([MS-TDS] 2.2.6.4 FeatureExt) the stand-in recognises
FEATURE_SESSIONRECOVERY = 0x01
FEATURE_FEDAUTH = 0x02
FEATURE_UTF8_SUPPORT = 0x0A
FEATURE_TERMINATOR = 0xFF

# SQL_Latin1_General_CP1_CI_AS: LCID 0x0409, flags IgnoreCase|IgnoreKana|IgnoreWidth (0xD0 in the
# third byte), sort id 52 (0x34) -- what a default-installed SQL Server reports.
COLLATION = bytes((0x09, 0x04, 0xD0, 0x00, 0x34))

# TDS versions as LOGIN7 carries them (little-endian DWORD) and LOGINACK returns them (big-endian).
TDS72 = 0x72090002
TDS73A = 0x730A0003
TDS73B = 0x730B0003
TDS74 = 0x74000004
KNOWN_TDS_VERSIONS = (TDS72, TDS73A, TDS73B, TDS74)

# PRELOGIN option tokens and ENCRYPTION values ([MS-TDS] 2.2.6.5)
PL_VERSION = 0x00
PL_ENCRYPTION = 0x01
PL_INSTOPT = 0x02
PL_THREADID = 0x03
PL_MARS = 0x04
PL_TERMINATOR = 0xFF
ENCRYPT_OFF = 0x00
ENCRYPT_ON = 0x01
ENCRYPT_NOT_SUP = 0x02
ENCRYPT_REQ = 0x03

SERVER_VERSION = (16, 0, 1000)  # reported as SQL Server 2022 RTM-ish: 16.0.1000
PROG_NAME = "Microsoft SQL Server"
PLP_NULL = b"\xff" * 8
PLP_CHUNK = 1 << 16  # bytes per PLP chunk; any size works, SQL Server uses about this
DEFAULT_PACKET_SIZE = 4096
MIN_PACKET_SIZE = 512
MAX_PACKET_SIZE = 32767

_H = struct.Struct("<H")
_I = struct.Struct("<I")
_i = struct.Struct("<i")
_q = struct.Struct("<q")
_Q = struct.Struct("<Q")
_d = struct.Struct("<d")
_DONE = struct.Struct("<BHHQ")
_DATETIME = struct.Struct("<BiI")  # length byte 8, days, ticks


class ProtocolError(Exception):
    """The client sent bytes that are not the TDS this server speaks; the connection is closed."""


# -- packets ------------------------------------------------------------------------------------------


def parse_header(header: bytes) -> tuple[int, int, int]:
    """(type, status, total length) of an 8-byte packet header."""
    ptype, status, length, _spid, _pid, _win = HEADER.unpack(header)
    if length < HEADER_SIZE:
        raise ProtocolError(f"packet length {length} shorter than its header")
    return ptype, status, length


def packetize(ptype: int, payload: bytes, packet_size: int, spid: int = 0) -> bytes:
    """Split one message into packets of at most ``packet_size`` bytes; EOM on the last one.

    Returned as one buffer so the caller can hand it to a single ``sendall`` (fewer syscalls,
    and TCP_NODELAY does not turn each packet into its own segment).
    """
    chunk = packet_size - HEADER_SIZE
    n = len(payload)
    if n <= chunk:
        return HEADER.pack(ptype, STATUS_EOM, n + HEADER_SIZE, spid, 1, 0) + payload
    parts: list[bytes] = []
    pid = 1
    view = memoryview(payload)
    for start in range(0, n, chunk):
        piece = view[start:start + chunk]
        last = start + chunk >= n
        parts.append(HEADER.pack(ptype, STATUS_EOM if last else 0, len(piece) + HEADER_SIZE, spid, pid, 0))
        parts.append(bytes(piece))
        pid = (pid + 1) & 0xFF
    return b"".join(parts)


# -- small encoders -----------------------------------------------------------------------------------


def b_varchar(text: str) -> bytes:
    """B_VARCHAR: character count in one byte, then UTF-16LE (truncated to 255 characters)."""
    data = text[:255].encode("utf-16-le")
    return bytes((len(data) // 2,)) + data


def us_varchar(text: str) -> bytes:
    """US_VARCHAR: character count in two bytes, then UTF-16LE."""
    data = text[:65535].encode("utf-16-le")
    return _H.pack(len(data) // 2) + data


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


def build_prelogin_response(encryption: int = ENCRYPT_NOT_SUP) -> bytes:
    """The server's PRELOGIN answer: version, ENCRYPT_NOT_SUP (no TLS), no instance, no MARS."""
    major, minor, build = SERVER_VERSION
    options = [
        (PL_VERSION, struct.pack(">BBHH", major, minor, build, 0)),
        (PL_ENCRYPTION, bytes((encryption,))),
        (PL_INSTOPT, b"\x00"),
        (PL_THREADID, b""),
        (PL_MARS, b"\x00"),
    ]
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


def feature_ext_ack(features: dict[int, bytes]) -> bytes:
    """FEATUREEXTACK for the features the stand-in acknowledges (only UTF-8 support; SQL Server 2019+
    acks it with 1). Features a server does not ack are off for the client ([MS-TDS] 2.2.7.11)."""
    if FEATURE_UTF8_SUPPORT not in features:
        return b""
    return (bytes((TOKEN_FEATUREEXTACK, FEATURE_UTF8_SUPPORT)) + _I.pack(1) + b"\x01"
            + bytes((FEATURE_TERMINATOR,)))


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


# -- login response tokens ----------------------------------------------------------------------------


def envchange_text(kind: int, new: str, old: str) -> bytes:
    return _token(TOKEN_ENVCHANGE, bytes((kind,)) + b_varchar(new) + b_varchar(old))


def envchange_collation(collation: bytes = COLLATION) -> bytes:
    return _token(TOKEN_ENVCHANGE, bytes((ENV_COLLATION, len(collation))) + collation + b"\x00")


def message_token(msg: Message, server_name: str) -> bytes:
    """ERROR (severity > 10) or INFO token; TDS 7.2+ line numbers are 4 bytes."""
    body = (struct.pack("<iBB", msg.number, msg.state & 0xFF, msg.severity & 0xFF) + us_varchar(msg.text)
            + b_varchar(server_name) + b_varchar(msg.procedure) + _i.pack(msg.line))
    return _token(TOKEN_ERROR if msg.is_error else TOKEN_INFO, body)


def loginack(tds_version: int) -> bytes:
    major, minor, build = SERVER_VERSION
    body = (b"\x01" + struct.pack(">I", tds_version) + b_varchar(PROG_NAME)
            + struct.pack(">BBH", major, minor, build))
    return _token(TOKEN_LOGINACK, body)


def done(status: int = DONE_FINAL, count: Optional[int] = None, curcmd: int = 0) -> bytes:
    """DONE token; a non-None ``count`` sets the COUNT bit (what cursor.rowcount reports)."""
    if count is not None:
        status |= DONE_COUNT
    return _DONE.pack(TOKEN_DONE, status, curcmd, count or 0)


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


def envchange_binary(kind: int, new: bytes, old: bytes) -> bytes:
    """ENVCHANGE with B_VARBYTE values: transaction begin/commit/rollback (8/9/10), reset ack (18)."""
    return _token(TOKEN_ENVCHANGE, bytes((kind, len(new))) + new + bytes((len(old),)) + old)


def returnstatus(value: int) -> bytes:
    """RETURNSTATUS: the procedure's return code."""
    return bytes((TOKEN_RETURNSTATUS,)) + _i.pack(value)


def returnvalue(ordinal: int, name: str, wire: tuple[SqlType, int], value: Any) -> bytes:
    """RETURNVALUE of an output parameter: ordinal, name, status 1 (output), TYPE_INFO, value."""
    type_info, encoder = column_type_info(Column(name, wire[0], wire[1]))
    return (bytes((TOKEN_RETURNVALUE,)) + _H.pack(ordinal) + b_varchar(name) + b"\x01" + _I.pack(0)
            + _H.pack(0x0001) + type_info + encoder(value))


def doneproc(status: int = DONE_FINAL, count: Optional[int] = None) -> bytes:
    """DONEPROC: the end of one RPC call."""
    if count is not None:
        status |= DONE_COUNT
    return _DONE.pack(TOKEN_DONEPROC, status, 0, count or 0)


def error_reply(msg: Message, server_name: str) -> bytes:
    """ERROR token + DONE(ERROR): the whole answer to a request that failed before any SQL ran
    (a refused LOGIN7, after which the server closes the connection; an unsupported packet type)."""
    return message_token(msg, server_name) + done(DONE_ERROR)


def database_changed(new: str, old: str) -> bytes:
    """The ENVCHANGE of a successful `USE db` (the engine sends the INFO 5701 that goes with it)."""
    return envchange_text(ENV_DATABASE, new, old)


# -- requests -----------------------------------------------------------------------------------------


def sql_batch_text(payload: bytes, tds_version: int) -> str:
    """The SQL text of a SQL_BATCH message (skipping ALL_HEADERS, present from TDS 7.2 on)."""
    start = 0
    if tds_version >= TDS72 and len(payload) >= 4:
        total = _I.unpack_from(payload, 0)[0]
        if 4 <= total <= len(payload):
            start = total
    return payload[start:].decode("utf-16-le", errors="replace")


# -- result sets --------------------------------------------------------------------------------------

Encoder = Callable[[Any], bytes]

_NULL1 = b"\x00"
_NULL2 = b"\xff\xff"
_EPOCH_ORDINAL = datetime(1900, 1, 1).toordinal()


def _enc_int(value: Any) -> bytes:
    return _NULL1 if value is None else b"\x04" + _i.pack(value)


def _enc_bigint(value: Any) -> bytes:
    return _NULL1 if value is None else b"\x08" + _q.pack(value)


def _enc_bit(value: Any) -> bytes:
    if value is None:
        return _NULL1
    return b"\x01\x01" if value else b"\x01\x00"


def _enc_float(value: Any) -> bytes:
    return _NULL1 if value is None else b"\x08" + _d.pack(value)


def datetime_parts(value: datetime) -> tuple[int, int]:
    """(days since 1900-01-01, 1/300-second ticks since midnight) of a DATETIME value."""
    days = value.toordinal() - _EPOCH_ORDINAL
    micros = ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond
    ticks = (micros * 3 + 5000) // 10000  # round to the nearest 1/300 s
    if ticks >= 300 * 86400:
        days += 1
        ticks -= 300 * 86400
    return days, ticks


def _enc_datetime(value: Any) -> bytes:
    if value is None:
        return _NULL1
    days, ticks = datetime_parts(value)
    return _DATETIME.pack(8, days, ticks)


def _enc_nvarchar(value: Any) -> bytes:
    if value is None:
        return _NULL2
    data: bytes = value.encode("utf-16-le")
    return _H.pack(len(data)) + data


def _enc_varbinary(value: Any) -> bytes:
    if value is None:
        return _NULL2
    data = bytes(value)
    return _H.pack(len(data)) + data


def plp(data: bytes) -> bytes:
    """Partially Length-Prefixed bytes: total length, chunks, zero terminator (the MAX types)."""
    n = len(data)
    if n <= PLP_CHUNK:
        if n == 0:
            return b"\x00" * 12
        return _Q.pack(n) + _I.pack(n) + data + b"\x00\x00\x00\x00"
    parts = [_Q.pack(n)]
    view = memoryview(data)
    for start in range(0, n, PLP_CHUNK):
        piece = view[start:start + PLP_CHUNK]
        parts.append(_I.pack(len(piece)))
        parts.append(bytes(piece))
    parts.append(b"\x00\x00\x00\x00")
    return b"".join(parts)


def _enc_nvarchar_max(value: Any) -> bytes:
    return PLP_NULL if value is None else plp(value.encode("utf-16-le"))


def _enc_varbinary_max(value: Any) -> bytes:
    return PLP_NULL if value is None else plp(bytes(value))


def column_type_info(column: Column) -> tuple[bytes, Encoder]:
    """(TYPE_INFO bytes for COLMETADATA, value encoder for ROW) of one column."""
    kind = column.type
    if kind is SqlType.INT:
        return b"\x26\x04", _enc_int
    if kind is SqlType.BIGINT:
        return b"\x26\x08", _enc_bigint
    if kind is SqlType.BIT:
        return b"\x68\x01", _enc_bit
    if kind is SqlType.FLOAT:
        return b"\x6d\x08", _enc_float
    if kind is SqlType.DATETIME:
        return b"\x6f\x08", _enc_datetime
    if kind is SqlType.NVARCHAR:
        if column.length == MAX or column.length > 4000:
            return b"\xe7\xff\xff" + COLLATION, _enc_nvarchar_max
        return b"\xe7" + _H.pack(2 * max(column.length, 1)) + COLLATION, _enc_nvarchar
    if kind is SqlType.VARBINARY:
        if column.length == MAX or column.length > 8000:
            return b"\xa5\xff\xff", _enc_varbinary_max
        return b"\xa5" + _H.pack(max(column.length, 1)), _enc_varbinary
    raise ValueError(f"unsupported column type {kind!r}")


def _fits(column: Column, rows: list[tuple[Any, ...]], index: int) -> bool:
    """Whether every value of a sized nvarchar/varbinary column fits its declared length."""
    if column.type is SqlType.NVARCHAR:
        limit = 2 * max(column.length, 1)  # bytes on the wire
        for row in rows:
            value = row[index]
            # UTF-16 takes 2 or 4 bytes a character: only a value that might not fit gets encoded.
            if value is not None and 4 * len(value) > limit and len(value.encode("utf-16-le")) > limit:
                return False
    elif column.type is SqlType.VARBINARY:
        limit = max(column.length, 1)
        for row in rows:
            value = row[index]
            if value is not None and len(value) > limit:
                return False
    return True


class ResultEncoder:
    """COLMETADATA once, then ROW tokens with per-column encoders chosen up front (the hot path).

    A sized nvarchar/varbinary column holding a longer value (an expression typed too narrowly) is
    sent as MAX instead: a value larger than its declared length would corrupt the client's buffers.
    """

    __slots__ = ("encoders", "metadata")

    def __init__(self, columns: list[Column], rows: Optional[list[tuple[Any, ...]]] = None) -> None:
        parts = [bytes((TOKEN_COLMETADATA,)), _H.pack(len(columns))]
        encoders: list[Encoder] = []
        for index, column in enumerate(columns):
            if (rows and column.length != MAX and column.type in (SqlType.NVARCHAR, SqlType.VARBINARY)
                    and not _fits(column, rows, index)):
                column = Column(column.name, column.type, MAX, column.nullable)
            type_info, encoder = column_type_info(column)
            flags = 0x0001 if column.nullable else 0x0000
            parts.append(_I.pack(0))           # UserType (4 bytes from TDS 7.2 on)
            parts.append(_H.pack(flags | 0x0008))  # nullable + "updateable unknown"
            parts.append(type_info)
            parts.append(b_varchar(column.name))
            encoders.append(encoder)
        self.metadata = b"".join(parts)
        self.encoders = encoders

    def rows(self, rows: list[tuple[Any, ...]]) -> list[bytes]:
        """ROW tokens for ``rows`` as a list of pieces, to be joined once with the rest of the reply."""
        encoders = self.encoders
        out: list[bytes] = []
        append = out.append
        row_token = b"\xd1"
        for row in rows:
            append(row_token)
            for encoder, value in zip(encoders, row):
                append(encoder(value))
        return out


def encode_events(events: list[Any], server_name: str, in_proc: bool = False) -> bytes:
    """The token stream answering one SQL batch, from the engine's events.

    DONE_MORE goes on every DONE but the last, as SQL Server does; a batch whose events do not end
    in a Done (an engine that stopped early) still gets a final DONE so the client is never left waiting.
    ``in_proc``: the statements of an RPC call, each ended by DONEINPROC (with MORE); the caller closes
    the stream with DONEPROC.
    """
    if in_proc:
        return _encode_in_proc(events, server_name)
    parts: list[bytes] = []
    append = parts.append
    last_done = -1
    for index in range(len(events) - 1, -1, -1):  # usually the last event: one step
        if isinstance(events[index], Done):
            last_done = index
            break
    after_rows = False
    error_seen = False
    last_done_part = -1
    for index, event in enumerate(events):
        if isinstance(event, Done):
            last_done_part = len(parts)
            if event.count is None and not event.error and not after_rows:
                # the DONE of SET/BEGIN/COMMIT/NOCOUNT statements: prebuilt (most DONEs of an upsert batch)
                append(_DONE_FINAL_PLAIN if index == last_done else _DONE_MORE_PLAIN)
            else:
                status = DONE_FINAL if index == last_done else DONE_MORE
                if event.error:
                    status |= DONE_ERROR
                append(done(status, event.count, CURCMD_SELECT if after_rows else 0))
            after_rows = False
            error_seen = False
        elif isinstance(event, ResultSet):
            encoder = ResultEncoder(event.columns, event.rows)
            append(encoder.metadata)
            parts.extend(encoder.rows(event.rows))
            after_rows = True
        elif isinstance(event, Message):
            append(message_token(event, server_name))
            error_seen = error_seen or event.is_error
        elif isinstance(event, DatabaseChanged):
            append(database_changed(event.new, event.old))
        else:  # pragma: no cover - the engine only produces the four event types
            raise TypeError(f"unknown engine event {event!r}")
    if last_done != len(events) - 1 or not events:
        # Everything after the last Done needs a closing DONE (and the earlier last one needs MORE).
        if last_done_part >= 0:
            token, status, curcmd, count = _DONE.unpack(parts[last_done_part])
            parts[last_done_part] = _DONE.pack(token, status | DONE_MORE, curcmd, count)
        append(done(DONE_ERROR if error_seen else DONE_FINAL))
    return b"".join(parts)


def _encode_in_proc(events: list[Any], server_name: str) -> bytes:
    parts: list[bytes] = []
    after_rows = False
    for event in events:
        if isinstance(event, Done):
            status = DONE_MORE | (DONE_ERROR if event.error else 0)
            if event.count is not None:
                status |= DONE_COUNT
            parts.append(_DONE.pack(TOKEN_DONEINPROC, status, CURCMD_SELECT if after_rows else 0,
                                    event.count or 0))
            after_rows = False
        elif isinstance(event, ResultSet):
            encoder = ResultEncoder(event.columns, event.rows)
            parts.append(encoder.metadata)
            parts.extend(encoder.rows(event.rows))
            after_rows = True
        elif isinstance(event, Message):
            parts.append(message_token(event, server_name))
        elif isinstance(event, DatabaseChanged):
            parts.append(database_changed(event.new, event.old))
    return b"".join(parts)


_DONE_MORE_PLAIN = done(DONE_MORE)
_DONE_FINAL_PLAIN = done(DONE_FINAL)


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


def build_sql_batch(sql: str) -> bytes:
    """A SQL_BATCH payload with the TDS 7.2+ ALL_HEADERS (transaction descriptor 0, one request)."""
    header = struct.pack("<IHQI", 18, 2, 0, 1)
    return struct.pack("<I", 4 + len(header)) + header + sql.encode("utf-16-le")
