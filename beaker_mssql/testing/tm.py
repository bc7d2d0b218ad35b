"""Transaction-manager requests ([MS-TDS] 2.2.6.9): what tedious sends for beginTransaction & co.

Each request becomes the T-SQL statement with the same meaning (``BEGIN TRANSACTION [name]``,
``COMMIT``, ``ROLLBACK [name]``, ``SAVE TRANSACTION name``) and runs on the batch path, so nesting,
savepoints and the 3902/3903/6401/628 errors are the engine's. The ENVCHANGE tokens (begin / commit /
rollback with the transaction descriptor) are added by the server for every request type alike.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Optional

from . import tds
from .results import SQLError

TM_GET_DTC_ADDRESS = 0x00
TM_PROPAGATE_XACT = 0x01
TM_BEGIN_XACT = 0x05
TM_PROMOTE_XACT = 0x06
TM_COMMIT_XACT = 0x07
TM_ROLLBACK_XACT = 0x08
TM_SAVE_XACT = 0x09

# isolation level byte of TM_BEGIN_XACT -> SET TRANSACTION ISOLATION LEVEL ... (0: no change)
ISOLATION = {1: "READ UNCOMMITTED", 2: "READ COMMITTED", 3: "REPEATABLE READ", 4: "SERIALIZABLE",
             5: "SNAPSHOT"}


@dataclass
class TmRequest:
    kind: int
    name: str = ""
    isolation: int = 0
    begin_after: bool = False  # COMMIT/ROLLBACK with fBeginXact: start a new transaction afterwards
    new_name: str = ""
    new_isolation: int = 0


def _name(payload: bytes, pos: int) -> tuple[str, int]:
    """A transaction name: one length byte (in bytes, as tedious writes it), then UTF-16LE."""
    if pos >= len(payload):
        return "", pos
    n = payload[pos]
    data = payload[pos + 1:pos + 1 + n]
    if len(data) != n:
        raise tds.ProtocolError("transaction-manager request ends inside a name")
    return data.decode("utf-16-le", errors="replace"), pos + 1 + n


def parse_tm(payload: bytes, tds_version: int) -> TmRequest:
    start = 0
    if tds_version >= tds.TDS72 and len(payload) >= 4:
        total = struct.unpack_from("<I", payload, 0)[0]
        if 4 <= total <= len(payload):
            start = total
    if start + 2 > len(payload):
        raise tds.ProtocolError("transaction-manager request without a request type")
    kind = struct.unpack_from("<H", payload, start)[0]
    pos = start + 2
    req = TmRequest(kind)
    if kind == TM_BEGIN_XACT:
        req.isolation = payload[pos] if pos < len(payload) else 0
        req.name, pos = _name(payload, pos + 1)
    elif kind in (TM_COMMIT_XACT, TM_ROLLBACK_XACT):
        req.name, pos = _name(payload, pos)
        flags = payload[pos] if pos < len(payload) else 0
        pos += 1
        if flags & 0x01:
            req.begin_after = True
            req.new_isolation = payload[pos] if pos < len(payload) else 0
            req.new_name, pos = _name(payload, pos + 1)
    elif kind == TM_SAVE_XACT:
        req.name, pos = _name(payload, pos)
    return req


def _quoted(name: str) -> str:
    return "[" + name.replace("]", "]]") + "]"


def _begin(name: str, isolation: int) -> str:
    sql = ""
    if isolation:
        level = ISOLATION.get(isolation)
        if level is None:
            raise SQLError(50000, f"Unknown isolation level {isolation} in a transaction-manager request.",
                           16)
        sql = f"SET TRANSACTION ISOLATION LEVEL {level};"
    return sql + ("BEGIN TRANSACTION " + _quoted(name) if name else "BEGIN TRANSACTION")


def tm_sql(req: TmRequest) -> Optional[str]:
    """The T-SQL with the request's meaning, or None for the distributed-transaction requests."""
    if req.kind == TM_BEGIN_XACT:
        return _begin(req.name, req.isolation)
    if req.kind in (TM_COMMIT_XACT, TM_ROLLBACK_XACT):
        if req.kind == TM_COMMIT_XACT:
            sql = "COMMIT TRANSACTION"
        else:
            sql = "ROLLBACK TRANSACTION " + _quoted(req.name) if req.name else "ROLLBACK TRANSACTION"
        if req.begin_after:
            sql += ";" + _begin(req.new_name, req.new_isolation)
        return sql
    if req.kind == TM_SAVE_XACT:
        return "SAVE TRANSACTION " + _quoted(req.name)
    return None
