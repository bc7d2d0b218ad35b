"""TYPE_INFO and values of RPC parameters ([MS-TDS] 2.2.5.4-2.2.5.6): the bytes a client sends for
each typed parameter, decoded into the Python values and engine types the stand-in runs with."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Optional

from . import tds
from .results import MAX

if TYPE_CHECKING:
    from .engine.types import SqlT

_I = struct.Struct("<I")
_H = struct.Struct("<H")


class RpcDecodeError(Exception):
    """An RPC parameter the stand-in cannot decode or does not support (answered with an ERROR)."""


class Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.buf):
            raise tds.ProtocolError("RPC request ends inside a parameter")
        data = self.buf[self.pos:end]
        self.pos = end
        return data

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(_H.unpack(self.take(2))[0])

    def u32(self) -> int:
        return int(_I.unpack(self.take(4))[0])

    def b_varchar(self) -> str:
        n = self.u8()
        return self.take(2 * n).decode("utf-16-le", errors="replace")

    @property
    def done(self) -> bool:
        return self.pos >= len(self.buf)


@dataclass
class TypeInfo:
    code: int
    name: str
    size: int = 0  # max length (bytes) for variable types, 0xFFFF for PLP; scale for time types
    collation: bytes = b""
    precision: int = 0


# Fixed-length types: code -> (name, bytes)
_FIXED = {0x30: ("tinyint", 1), 0x34: ("smallint", 2), 0x38: ("int", 4), 0x7F: ("bigint", 8),
          0x32: ("bit", 1), 0x3B: ("real", 4), 0x3E: ("float", 8), 0x3D: ("datetime", 8),
          0x3A: ("smalldatetime", 4), 0x3C: ("money", 8), 0x7A: ("smallmoney", 4), 0x1F: ("null", 0)}
# BYTELEN types (one length byte in TYPE_INFO and before each value)
_BYTELEN = {0x26: "intn", 0x68: "bitn", 0x6D: "floatn", 0x6F: "datetimen", 0x24: "uniqueidentifier",
            0x6E: "moneyn"}
# USHORTLEN types with a collation (strings) or without (binary)
_USHORT_CHAR = {0xE7: "nvarchar", 0xEF: "nchar", 0xA7: "varchar", 0xAF: "char"}
_USHORT_BIN = {0xA5: "varbinary", 0xAD: "binary"}
_LONGLEN = {0x63: "ntext", 0x23: "text", 0x22: "image"}


def read_type_info(r: Reader) -> TypeInfo:
    code = r.u8()
    if code in _FIXED:
        return TypeInfo(code, _FIXED[code][0], _FIXED[code][1])
    if code in _BYTELEN:
        return TypeInfo(code, _BYTELEN[code], r.u8())
    if code in _USHORT_CHAR:
        size = r.u16()
        return TypeInfo(code, _USHORT_CHAR[code], size, r.take(5))
    if code in _USHORT_BIN:
        return TypeInfo(code, _USHORT_BIN[code], r.u16())
    if code in (0x6A, 0x6C):  # DECIMALN / NUMERICN: length, precision, scale
        size = r.u8()
        precision = r.u8()
        r.u8()
        return TypeInfo(code, "decimal" if code == 0x6A else "numeric", size, precision=precision)
    if code == 0x28:  # DATEN
        return TypeInfo(code, "date")
    if code in (0x29, 0x2A, 0x2B):  # TIMEN, DATETIME2N, DATETIMEOFFSETN: scale
        return TypeInfo(code, {0x29: "time", 0x2A: "datetime2", 0x2B: "datetimeoffset"}[code], r.u8())
    if code in _LONGLEN:
        size = r.u32()
        collation = r.take(5) if code != 0x22 else b""
        return TypeInfo(code, _LONGLEN[code], size, collation)
    raise RpcDecodeError(f"the TDS data type 0x{code:02X}")


def _plp(r: Reader) -> Optional[bytes]:
    total = struct.unpack("<Q", r.take(8))[0]
    if total == 0xFFFFFFFFFFFFFFFF:
        return None
    parts: list[bytes] = []
    while True:
        n = r.u32()
        if n == 0:
            return b"".join(parts)
        parts.append(r.take(n))


def _text_codec(collation: bytes) -> str:
    """The code page of a varchar value: UTF-8 under a _UTF8 collation, else the LCID's (1252 here)."""
    if len(collation) == 5 and collation[3] & 0x04:  # fUTF8 ([MS-TDS] 2.2.5.1.2)
        return "utf-8"
    return "cp1252"


_EPOCH = datetime(1900, 1, 1)
_DATE0 = datetime(1, 1, 1)


def _time_part(data: bytes, scale: int) -> timedelta:
    units = int.from_bytes(data, "little")
    return timedelta(microseconds=units * 10 ** 6 // 10 ** scale)


def read_value(r: Reader, ti: TypeInfo) -> Any:
    code = ti.code
    if code in _FIXED:
        data = r.take(ti.size)
        return _fixed_value(ti.name, data)
    if code in _BYTELEN:
        n = r.u8()
        if n == 0:
            return None
        data = r.take(n)
        if ti.name == "intn":
            return int.from_bytes(data, "little", signed=True)
        if ti.name == "bitn":
            return bool(data[0])
        if ti.name == "floatn":
            return struct.unpack("<d" if n == 8 else "<f", data)[0]
        if ti.name == "datetimen":
            return _fixed_value("datetime" if n == 8 else "smalldatetime", data)
        return data
    if code in _USHORT_CHAR or code in _USHORT_BIN:
        raw: Optional[bytes]
        if ti.size == 0xFFFF:
            raw = _plp(r)
        else:
            n = r.u16()
            raw = None if n == 0xFFFF else r.take(n)
        if raw is None:
            return None
        if code in _USHORT_BIN:
            return raw
        if code in (0xE7, 0xEF):
            return raw.decode("utf-16-le", errors="replace")
        return raw.decode(_text_codec(ti.collation), errors="replace")
    if code in (0x6A, 0x6C):
        n = r.u8()
        if n:
            r.take(n)
        return None
    if code in (0x28, 0x29, 0x2A, 0x2B):
        n = r.u8()
        if n == 0:
            return None
        data = r.take(n)
        if code == 0x28:
            return _DATE0 + timedelta(days=int.from_bytes(data, "little"))
        tlen = {0: 3, 1: 3, 2: 3, 3: 4, 4: 4, 5: 5, 6: 5, 7: 5}.get(ti.size, 5)
        t = _time_part(data[:tlen], ti.size)
        if code == 0x29:
            return t
        day = _DATE0 + timedelta(days=int.from_bytes(data[tlen:tlen + 3], "little"))
        value = day + t
        if code == 0x2B:
            # datetimeoffset is sent in UTC; its conversion to datetime/datetime2 keeps the local time.
            offset = struct.unpack("<h", data[tlen + 3:tlen + 5])[0]
            value += timedelta(minutes=offset)
        return value
    if code in _LONGLEN:
        # An RPC parameter value of text/ntext/image is a LONGLEN length (0xFFFFFFFF: NULL, CHARBIN_NULL
        # of [MS-TDS] 2.2.5.2.3) and the bytes: no text pointer and timestamp, which only ROW data carries
        # (2.2.7.19). Measured: ODBC Driver 18.6 sends sp_prepare's NULL @params as NTEXT FFFFFFFF;
        # tedious's NText/Text/Image parameters are encoded the same way.
        length = r.u32()
        if length == 0xFFFFFFFF:
            return None
        data = r.take(length)
        if code == 0x22:
            return data
        return data.decode("utf-16-le" if code == 0x63 else _text_codec(ti.collation), errors="replace")
    raise RpcDecodeError(f"the TDS data type 0x{code:02X}")  # pragma: no cover - _read_type_info refused


def _fixed_value(name: str, data: bytes) -> Any:
    if name in ("tinyint", "smallint", "int", "bigint"):
        return int.from_bytes(data, "little", signed=name != "tinyint")
    if name == "bit":
        return bool(data[0])
    if name == "real":
        return float(struct.unpack("<f", data)[0])
    if name == "float":
        return float(struct.unpack("<d", data)[0])
    if name == "datetime":
        days, ticks = struct.unpack("<iI", data)
        return _EPOCH + timedelta(days=days, milliseconds=ticks * 10 / 3)
    if name == "smalldatetime":
        days, minutes = struct.unpack("<HH", data)
        return _EPOCH + timedelta(days=days, minutes=minutes)
    return data  # money types are refused by _engine_type


def engine_type(ti: TypeInfo) -> tuple[str, Optional[SqlT]]:
    """(the SQL type name the client sent, the engine type of its value or None if unsupported)."""
    from .engine.types import T_BIGINT, T_BIT, T_DATETIME, T_DATETIME2, T_FLOAT, T_NULL, SqlT

    name = ti.name
    if name == "intn":
        name = {1: "tinyint", 2: "smallint", 4: "int", 8: "bigint"}.get(ti.size, "int")
    if name in ("tinyint", "smallint", "int"):
        return name, SqlT(name)
    if name == "bigint":
        return name, T_BIGINT
    if name in ("bit", "bitn"):
        return "bit", T_BIT
    if name in ("real", "float", "floatn"):
        return ("real" if ti.size == 4 else "float"), T_FLOAT
    if name in ("datetime", "smalldatetime", "datetimen"):
        return ("smalldatetime" if ti.size == 4 else "datetime"), T_DATETIME
    if name in ("date", "datetime2", "datetimeoffset"):
        return name, T_DATETIME2
    if name in ("nvarchar", "nchar", "ntext"):
        chars = MAX if ti.size in (0xFFFF,) or name == "ntext" or ti.size > 8000 else max(ti.size // 2, 1)
        return name, SqlT("nvarchar", chars)
    if name in ("varchar", "char", "text"):
        chars = MAX if ti.size == 0xFFFF or name == "text" or ti.size > 8000 else max(ti.size, 1)
        return name, SqlT("varchar", chars)
    if name in ("varbinary", "binary", "image"):
        length = MAX if ti.size == 0xFFFF or name == "image" or ti.size > 8000 else max(ti.size, 1)
        return name, SqlT("varbinary", length)
    if name == "null":
        return name, T_NULL
    return name, None
