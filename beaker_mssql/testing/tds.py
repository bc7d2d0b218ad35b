"""TDS 7.2-7.4 bytes for the stand-in: the numbers, packets and the tokens every reply uses.

Everything here and in its neighbours is a pure function of its arguments (no sockets, no SQL) so
the server can stay a thin loop and the encoding can be unit-tested byte for byte. The other message
types have modules of their own: ``login.py`` (PRELOGIN, LOGIN7), ``replies.py`` (result sets and the
token stream answering a request), ``rpc.py`` (RPC requests), ``tm.py`` (transaction manager),
``tls.py`` (encryption). References: [MS-TDS].
"""

from __future__ import annotations

import struct
from typing import Optional

from .results import Message

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


# -- tokens every reply uses -------------------------------------------------------------------------


def envchange_text(kind: int, new: str, old: str) -> bytes:
    return _token(TOKEN_ENVCHANGE, bytes((kind,)) + b_varchar(new) + b_varchar(old))


def envchange_collation(collation: bytes = COLLATION) -> bytes:
    return _token(TOKEN_ENVCHANGE, bytes((ENV_COLLATION, len(collation))) + collation + b"\x00")


def message_token(msg: Message, server_name: str) -> bytes:
    """ERROR (severity > 10) or INFO token; TDS 7.2+ line numbers are 4 bytes."""
    body = (struct.pack("<iBB", msg.number, msg.state & 0xFF, msg.severity & 0xFF) + us_varchar(msg.text)
            + b_varchar(server_name) + b_varchar(msg.procedure) + _i.pack(msg.line))
    return _token(TOKEN_ERROR if msg.is_error else TOKEN_INFO, body)


def done(status: int = DONE_FINAL, count: Optional[int] = None, curcmd: int = 0) -> bytes:
    """DONE token; a non-None ``count`` sets the COUNT bit (what cursor.rowcount reports)."""
    if count is not None:
        status |= DONE_COUNT
    return _DONE.pack(TOKEN_DONE, status, curcmd, count or 0)


def envchange_binary(kind: int, new: bytes, old: bytes) -> bytes:
    """ENVCHANGE with B_VARBYTE values: transaction begin/commit/rollback (8/9/10), reset ack (18)."""
    return _token(TOKEN_ENVCHANGE, bytes((kind, len(new))) + new + bytes((len(old),)) + old)


def returnstatus(value: int) -> bytes:
    """RETURNSTATUS: the procedure's return code."""
    return bytes((TOKEN_RETURNSTATUS,)) + _i.pack(value)


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


# -- client side (tests, health checks) -------------------------------------------------------------


def build_sql_batch(sql: str) -> bytes:
    """A SQL_BATCH payload with the TDS 7.2+ ALL_HEADERS (transaction descriptor 0, one request)."""
    header = struct.pack("<IHQI", 18, 2, 0, 1)
    return struct.pack("<I", 4 + len(header)) + header + sql.encode("utf-16-le")
