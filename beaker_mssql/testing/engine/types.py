"""SQL types, values, implicit/explicit conversions and collation keys, following SQL Server.

Values are plain Python objects: int (tinyint/smallint/int/bigint), bool (bit), float, str (nvarchar/varchar),
bytes (varbinary), datetime (datetime rounded to 1/300 s, or datetime2), None (NULL).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Optional

from ..results import MAX, SQLError, SqlType

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1
# The integer types' ranges (learn.microsoft.com/en-us/sql/t-sql/data-types/
# int-bigint-smallint-and-tinyint-transact-sql).
# tinyint and smallint are here because drivers declare them: ODBC Driver 18 (mssql-python) binds a
# Python int of 0..255 as tinyint and one of -32768..32767 as smallint in sp_prepexec's @params.
INT_RANGES = {
    "tinyint": (0, 255),
    "smallint": (-(2**15), 2**15 - 1),
    "int": (INT_MIN, INT_MAX),
    "bigint": (BIGINT_MIN, BIGINT_MAX),
}

# SQL Server data type precedence (higher wins an implicit conversion;
# learn.microsoft.com/en-us/sql/t-sql/data-types/data-type-precedence-transact-sql).
PRECEDENCE = {
    "datetime2": 12,
    "datetime": 11,
    "float": 10,
    "bigint": 9,
    "int": 8,
    "smallint": 7,
    "tinyint": 6,
    "bit": 5,
    "nvarchar": 3,
    "varchar": 2,
    "varbinary": 1,
    "null": 0,
}
STRING_KINDS = frozenset({"nvarchar", "varchar"})
NUMERIC_KINDS = frozenset({"tinyint", "smallint", "int", "bigint", "bit", "float"})
INTEGER_KINDS = frozenset({"tinyint", "smallint", "int", "bigint", "bit"})


@dataclass(frozen=True)
class SqlT:
    """A static SQL type: kind plus length (characters/bytes, MAX = -1; 0 for fixed types)."""

    kind: str
    length: int = 0

    def __str__(self) -> str:
        if self.kind in ("nvarchar", "varchar", "varbinary"):
            return f"{self.kind}({'max' if self.length == MAX else self.length})"
        return self.kind

    @property
    def is_string(self) -> bool:
        return self.kind in STRING_KINDS

    def wire(self) -> tuple[SqlType, int]:
        """The results.SqlType (and length) used to send values of this type."""
        k = self.kind
        if k in ("nvarchar", "varchar"):
            # varchar is sent as nvarchar: more than 4000 characters only fits as nvarchar(max)
            if self.length == MAX or self.length > 4000:
                return SqlType.NVARCHAR, MAX
            return SqlType.NVARCHAR, self.length if self.length else 1
        if k == "varbinary":
            return SqlType.VARBINARY, self.length if self.length else 1
        if k in ("datetime", "datetime2"):
            return SqlType.DATETIME, 0
        if k == "null":
            return SqlType.INT, 0
        return SqlType(k), 0


T_INT = SqlT("int")
T_TINYINT = SqlT("tinyint")
T_SMALLINT = SqlT("smallint")
T_BIGINT = SqlT("bigint")
T_BIT = SqlT("bit")
T_FLOAT = SqlT("float")
T_DATETIME = SqlT("datetime")
T_DATETIME2 = SqlT("datetime2")
T_NULL = SqlT("null")
T_SYSNAME = SqlT("nvarchar", 128)


def type_name_for_message(t: SqlT) -> str:
    return str(t)


# --------------------------------------------------------------------------- type names

_SIMPLE_TYPES = {
    "INT": T_INT,
    "INTEGER": T_INT,
    "TINYINT": T_TINYINT,
    "SMALLINT": T_SMALLINT,
    "BIGINT": T_BIGINT,
    "BIT": T_BIT,
    "FLOAT": T_FLOAT,
    "REAL": T_FLOAT,
    "DATETIME": T_DATETIME,
    "DATETIME2": T_DATETIME2,
    "SYSNAME": T_SYSNAME,
}
_SIZED_TYPES = {
    "NVARCHAR": ("nvarchar", 4000),
    "VARCHAR": ("varchar", 8000),
    "VARBINARY": ("varbinary", 8000),
}
KNOWN_UNSUPPORTED_TYPES = frozenset(
    {
        "DECIMAL",
        "NUMERIC",
        "MONEY",
        "SMALLMONEY",
        "CHAR",
        "NCHAR",
        "BINARY",
        "TEXT",
        "NTEXT",
        "IMAGE",
        "DATE",
        "TIME",
        "DATETIMEOFFSET",
        "SMALLDATETIME",
        "UNIQUEIDENTIFIER",
        "XML",
        "SQL_VARIANT",
        "TIMESTAMP",
        "ROWVERSION",
        "GEOGRAPHY",
        "GEOMETRY",
        "HIERARCHYID",
    }
)


def is_type_name(upper: str) -> bool:
    return upper in _SIMPLE_TYPES or upper in _SIZED_TYPES or upper in KNOWN_UNSUPPORTED_TYPES


def sized_type_info(upper: str) -> Optional[tuple[str, int]]:
    return _SIZED_TYPES.get(upper)


def simple_type(upper: str) -> Optional[SqlT]:
    return _SIMPLE_TYPES.get(upper)


# --------------------------------------------------------------------------- collation


def ci_key(s: str) -> str:
    """Key for SQL_Latin1_General_CP1_CI_AS equality (approximation): case-insensitive, no trailing spaces."""
    return s.rstrip(" ").casefold()


def bin_key(s: str) -> str:
    """Key for a binary/case-sensitive collation: exact, but trailing spaces still ignored (ANSI padding)."""
    return s.rstrip(" ")


BINARY_COLLATIONS = frozenset(
    {
        "LATIN1_GENERAL_BIN2",
        "LATIN1_GENERAL_100_BIN2",
        "LATIN1_GENERAL_BIN",
        "LATIN1_GENERAL_100_BIN",
        "SQL_LATIN1_GENERAL_CP1_CS_AS",
        "LATIN1_GENERAL_CS_AS",
        "LATIN1_GENERAL_100_CS_AS",
        "LATIN1_GENERAL_100_BIN2_UTF8",
    }
)
CI_COLLATIONS = frozenset(
    {
        "SQL_LATIN1_GENERAL_CP1_CI_AS",
        "LATIN1_GENERAL_CI_AS",
        "LATIN1_GENERAL_100_CI_AS",
        "DATABASE_DEFAULT",
    }
)


def value_key(v: Any, binary: bool = False) -> Any:
    """Equality/ordering key of a single value in the given collation (None stays None)."""
    if isinstance(v, str):
        return bin_key(v) if binary else ci_key(v)
    if isinstance(v, bytes):
        return v.rstrip(b"\x00")
    if isinstance(v, bool):
        return int(v)
    return v


# --------------------------------------------------------------------------- datetime

DATETIME_MIN = datetime(1753, 1, 1)
DATETIME_MAX = datetime(9999, 12, 31, 23, 59, 59, 997000)
_TICKS_PER_DAY = 300 * 86400


def round_datetime(dt: datetime) -> datetime:
    """Round to SQL Server's datetime precision (1/300 s: .000/.003/.007); raises OverflowError on range."""
    us = (dt.hour * 3600 + dt.minute * 60 + dt.second) * 1_000_000 + dt.microsecond
    ticks = (us * 300 + 500_000) // 1_000_000
    if dt.tzinfo is None:
        # Same result as below with one datetime operation instead of three (this runs for every
        # GETUTCDATE() and every write): ticks <= _TICKS_PER_DAY, and that maps to exactly next midnight.
        result = dt + timedelta(microseconds=(ticks * 10 + 1) // 3 * 1000 - us)
        if result < DATETIME_MIN or result > DATETIME_MAX:
            raise OverflowError("datetime out of range")
        return result
    day = datetime(dt.year, dt.month, dt.day)
    if ticks >= _TICKS_PER_DAY:
        day += timedelta(days=1)
        ticks -= _TICKS_PER_DAY
    ms = (ticks * 10 + 1) // 3
    result = day + timedelta(milliseconds=ms)
    if result < DATETIME_MIN or result > DATETIME_MAX:
        raise OverflowError("datetime out of range")
    return result


_DT_ISO = re.compile(
    r"^\s*(\d{4})-(\d{1,2})-(\d{1,2})(?:(?:\s+|T)(\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:([.:])(\d+))?)?)?\s*$"
)
_DT_COMPACT = re.compile(
    r"^\s*(\d{4})(\d{2})(\d{2})(?:\s+(\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:([.:])(\d+))?)?)?\s*$"
)
_DT_MDY = re.compile(
    r"^\s*(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})(?:\s+(\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:([.:])(\d+))?)?)?\s*$"
)


def parse_datetime_string(s: str, kind: str, source_kind: str) -> datetime:
    """Parse a string as SQL Server would for datetime/datetime2 (us_english, DATEFORMAT mdy)."""
    m = _DT_ISO.match(s) or _DT_COMPACT.match(s)
    if m:
        y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
    else:
        m = _DT_MDY.match(s)
        if not m:
            raise _conv_datetime_failed(kind)
        mo, d, y = int(m.group(1)), int(m.group(2)), int(m.group(3))
    hh = int(m.group(4) or 0)
    mi = int(m.group(5) or 0)
    ss = int(m.group(6) or 0)
    sep, frac = m.group(7), m.group(8)
    us = 0
    if frac:
        if kind == "datetime" and len(frac) > 3:
            raise _conv_datetime_failed(kind)
        if len(frac) > 7:
            raise _conv_datetime_failed(kind)
        if sep == ":":
            if kind != "datetime":
                raise _conv_datetime_failed(kind)
            us = int(frac) * 1000
        else:
            us = round(int(frac.ljust(7, "0")) / 10)
    if hh > 23 or mi > 59 or ss > 59:
        raise _conv_datetime_failed(kind)
    try:
        value = datetime(y, mo, d, hh, mi, ss) + timedelta(microseconds=us)
    except ValueError:
        raise _out_of_range(source_kind, kind) from None
    if kind == "datetime":
        try:
            return round_datetime(value)
        except OverflowError:
            raise _out_of_range(source_kind, kind) from None
    return value


def _conv_datetime_failed(kind: str) -> SQLError:
    return SQLError(241, "Conversion failed when converting date and/or time from character string.", 16)


def _out_of_range(source_kind: str, kind: str) -> SQLError:
    return SQLError(
        242,
        f"The conversion of a {source_kind} data type to a {kind} data type resulted in an "
        "out-of-range value.",
        16,
    )


_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def format_datetime_default(dt: datetime) -> str:
    """CAST(datetime AS nvarchar): 'Feb 29 2024  1:45PM' (style 0)."""
    h12 = dt.hour % 12 or 12
    ampm = "AM" if dt.hour < 12 else "PM"
    return f"{_MONTHS[dt.month - 1]} {dt.day:2d} {dt.year} {h12:2d}:{dt.minute:02d}{ampm}"


def format_datetime_iso(dt: datetime, kind: str) -> str:
    base = dt.strftime("%Y-%m-%d %H:%M:%S")
    if kind == "datetime":
        return f"{base}.{dt.microsecond // 1000:03d}"
    return f"{base}.{dt.microsecond:06d}0"


_EPOCH_1900 = datetime(1900, 1, 1)


# --------------------------------------------------------------------------- conversion


def overflow(kind: str) -> SQLError:
    return SQLError(8115, f"Arithmetic overflow error converting expression to data type {kind}.", 16)


def small_int_overflow(kind: str, value: int) -> SQLError:
    """An integer that does not fit tinyint/smallint: SQL Server's Msg 220 (sys.messages: "Arithmetic
    overflow error for data type %ls, value = %ld.")."""
    return SQLError(220, f"Arithmetic overflow error for data type {kind}, value = {value}.", 16)


def implicit_not_allowed(src: SqlT, dst: SqlT) -> SQLError:
    return SQLError(
        257,
        f"Implicit conversion from data type {src.kind} to {dst} is not allowed. "
        "Use the CONVERT function to run this query.",
        16,
    )


_IMPLICIT_FORBIDDEN = {
    ("datetime", "int"),
    ("datetime", "bigint"),
    ("datetime", "bit"),
    ("datetime", "float"),
    ("datetime2", "int"),
    ("datetime2", "bigint"),
    ("datetime2", "bit"),
    ("datetime2", "float"),
    ("nvarchar", "varbinary"),
    ("varchar", "varbinary"),
    ("datetime", "varbinary"),
    ("datetime2", "varbinary"),
    ("float", "varbinary"),
    ("varbinary", "datetime"),
    ("varbinary", "datetime2"),
    ("varbinary", "float"),
    ("int", "datetime2"),
    ("bigint", "datetime2"),
    ("float", "datetime2"),
    ("bit", "datetime2"),
    ("bit", "datetime"),
} | {pair for small in ("tinyint", "smallint")
     for pair in (("datetime", small), ("datetime2", small), (small, "datetime2"))}


def check_implicit(src: SqlT, dst: SqlT) -> None:
    """Raise 257 when SQL Server refuses this implicit conversion."""
    if (src.kind, dst.kind) in _IMPLICIT_FORBIDDEN:
        raise implicit_not_allowed(src, dst)


def _parse_int_string(s: str, src_kind: str, dst_kind: str) -> int:
    t = s.strip()
    if t == "":
        return 0
    if re.fullmatch(r"[+-]?\d+", t):
        return int(t)
    raise SQLError(
        245, f"Conversion failed when converting the {src_kind} value '{s}' to data type {dst_kind}.", 16
    )


def convert(value: Any, src: SqlT, dst: SqlT) -> Any:
    """Convert a non-NULL-or-NULL value from ``src`` to ``dst`` (explicit semantics; callers check 257)."""
    if value is None:
        return None
    k = dst.kind
    if k in INT_RANGES:
        lo, hi = INT_RANGES[k]
        small = k in ("tinyint", "smallint")
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            if lo <= value <= hi:
                return value
            raise small_int_overflow(k, value) if small else overflow(k)
        if isinstance(value, float):
            if math.isnan(value) or math.isinf(value):
                raise overflow(k)
            r = int(value)
            if lo <= r <= hi:
                return r
            raise overflow(k)
        if isinstance(value, str):
            r = _parse_int_string(value, src.kind, k)
            if lo <= r <= hi:
                return r
            if small:  # Msg 244: "... overflowed an %hs column. Use a larger integer column." (INT1/INT2)
                raise SQLError(
                    244,
                    f"The conversion of the {src.kind} value '{value}' overflowed an "
                    f"{'INT1' if k == 'tinyint' else 'INT2'} column. Use a larger integer column.",
                    16,
                )
            raise SQLError(
                248 if k == "int" else 8115,
                f"The conversion of the {src.kind} value '{value}' overflowed an {k} column."
                if k == "int"
                else f"Arithmetic overflow error converting expression to data type {k}.",
                16,
            )
        if isinstance(value, datetime):
            days = (value - _EPOCH_1900).total_seconds() / 86400
            r = math.floor(days + 0.5)
            if small and not lo <= r <= hi:
                raise small_int_overflow(k, r)
            return r
        if isinstance(value, bytes):
            n = {"tinyint": 1, "smallint": 2, "int": 4}.get(k, 8)
            b = value[-n:].rjust(n, b"\x00")
            return int.from_bytes(b, "big", signed=True)
    elif k == "bit":
        if isinstance(value, (bool, int)):
            return bool(value)
        if isinstance(value, float):
            return value != 0.0
        if isinstance(value, str):
            t = value.strip()
            if t.upper() == "TRUE":
                return True
            if t.upper() == "FALSE":
                return False
            try:
                return bool(_parse_int_string(value, src.kind, "bit"))
            except SQLError:
                pass
            raise SQLError(
                245, f"Conversion failed when converting the {src.kind} value '{value}' to data type bit.", 16
            )
        if isinstance(value, bytes):
            return any(value)
    elif k == "float":
        if isinstance(value, (bool, int)):
            return float(value)
        if isinstance(value, float):
            return value
        if isinstance(value, str):
            try:
                t = value.strip()
                if not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", t):
                    raise ValueError(t)
                return float(t)
            except ValueError:
                raise SQLError(8114, f"Error converting data type {src.kind} to float.", 16) from None
        if isinstance(value, datetime):
            return (value - _EPOCH_1900).total_seconds() / 86400
    elif k == "nvarchar" or k == "varchar":
        if isinstance(value, str):
            s = value
        elif isinstance(value, bool):
            s = "1" if value else "0"
        elif isinstance(value, int):
            s = str(value)
        elif isinstance(value, float):
            s = _format_float(value)
        elif isinstance(value, datetime):
            s = (
                format_datetime_default(value)
                if src.kind == "datetime"
                else format_datetime_iso(value, src.kind)
            )
        elif isinstance(value, bytes):
            if k == "nvarchar":
                b = value if len(value) % 2 == 0 else value + b"\x00"
                s = b.decode("utf-16-le", errors="replace")
            else:
                s = value.decode("latin-1")
        else:
            raise TypeError(type(value))
        if dst.length not in (0, MAX) and len(s) > dst.length:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return "*"
            s = s[: dst.length]
        return s
    elif k == "varbinary":
        if isinstance(value, bytes):
            b = value
        elif isinstance(value, str):
            b = (
                value.encode("utf-16-le")
                if src.kind == "nvarchar"
                else value.encode("latin-1", errors="replace")
            )
        elif isinstance(value, bool):
            b = b"\x01" if value else b"\x00"
        elif isinstance(value, int):
            n = {"tinyint": 1, "smallint": 2, "bigint": 8}.get(src.kind, 4)
            b = value.to_bytes(n, "big", signed=src.kind != "tinyint")
        else:
            raise SQLError(
                529, f"Explicit conversion from data type {src.kind} to varbinary is not allowed.", 16
            )
        if dst.length not in (0, MAX) and len(b) > dst.length:
            b = b[: dst.length]
        return b
    elif k == "datetime" or k == "datetime2":
        if isinstance(value, datetime):
            if k == "datetime":
                try:
                    return round_datetime(value)
                except OverflowError:
                    raise _out_of_range(src.kind, k) from None
            return value
        if isinstance(value, str):
            return parse_datetime_string(value, k, src.kind)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                as_dt = _EPOCH_1900 + timedelta(days=float(value))
                return round_datetime(as_dt) if k == "datetime" else as_dt
            except (OverflowError, ValueError):
                raise SQLError(
                    8115, "Arithmetic overflow error converting expression to data type datetime.", 16
                ) from None
        raise SQLError(529, f"Explicit conversion from data type {src.kind} to {k} is not allowed.", 16)
    raise SQLError(529, f"Explicit conversion from data type {src.kind} to {dst} is not allowed.", 16)


def _format_float(v: float) -> str:
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    r = f"{v:.6g}"
    if "e" in r:
        mant, exp = r.split("e")
        r = f"{mant}e{int(exp):+04d}"
    return r


def python_type_name(value: Any) -> SqlT:
    """Static-ish type of a runtime value (used for sql_variant-like corners)."""
    if value is None:
        return T_NULL
    if isinstance(value, bool):
        return T_BIT
    if isinstance(value, int):
        return T_INT if INT_MIN <= value <= INT_MAX else T_BIGINT
    if isinstance(value, float):
        return T_FLOAT
    if isinstance(value, str):
        return SqlT("nvarchar", MAX)
    if isinstance(value, bytes):
        return SqlT("varbinary", MAX)
    if isinstance(value, datetime):
        return T_DATETIME2
    raise TypeError(type(value))


def result_type(a: SqlT, b: SqlT) -> SqlT:
    """The type two operands are converted to for comparison / CASE / COALESCE (precedence rule)."""
    if a.kind == "null":
        return b
    if b.kind == "null":
        return a
    if PRECEDENCE[a.kind] >= PRECEDENCE[b.kind]:
        hi, lo = a, b
    else:
        hi, lo = b, a
    if hi.kind == lo.kind and hi.kind in ("nvarchar", "varchar", "varbinary"):
        if hi.length == MAX or lo.length == MAX:
            return SqlT(hi.kind, MAX)
        return SqlT(hi.kind, max(hi.length, lo.length))
    if hi.kind == "nvarchar" and lo.kind == "varchar":
        return SqlT("nvarchar", MAX if MAX in (hi.length, lo.length) else max(hi.length, lo.length))
    return hi


Converter = Callable[[Any], Any]


def converter(src: SqlT, dst: SqlT) -> Optional[Converter]:
    """A function converting values of ``src`` to ``dst``, or None when no conversion is needed."""
    if src.kind == dst.kind and src.kind not in ("nvarchar", "varchar", "varbinary"):
        return None
    if src.kind == "null":
        return None
    if src.kind in ("nvarchar", "varchar") and dst.kind in ("nvarchar", "varchar") and dst.length in (0, MAX):
        return None

    def conv(v: Any) -> Any:
        return convert(v, src, dst)

    return conv
