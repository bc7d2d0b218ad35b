"""Row ids for cache entries: a namespace and a key -> collation-safe text within 255 characters.

:func:`encode_part` keeps short strings of lowercase letters, digits and ``._-/|`` readable, writes
anything else as ``~x`` + hex (keys differing only by case stay distinct under the case-insensitive
collation) and hashes what would not fit (``~h`` + SHA-256). :func:`encode_key` gives keys that are
not text a typed form, so that two keys share a row exactly when they are one dict key, as in
Beaker's memory, file and database backends. No I/O; the namespace manager is the only user.
"""

from __future__ import annotations

import datetime
import decimal
import fractions
import hashlib
import math
import numbers
import re
import uuid
from typing import Any, Optional, Union

from beaker_mssql.errors import InvalidCacheKey

__all__ = ["as_bytes", "decode_key", "decode_part", "encode_key", "encode_part"]

_READABLE = re.compile(r"[a-z0-9._\-/|]+")


def as_bytes(value: object) -> bytes:
    """A key as bytes (str as UTF-8), the form its row id is computed from."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return str(value).encode("utf-8")


def encode_part(value: object, limit: int) -> str:
    """A collation-safe, reversible-when-possible text form of a namespace or key (<= ``limit``)."""
    raw = as_bytes(value)
    try:
        text: Optional[str] = raw.decode("ascii")
    except UnicodeDecodeError:
        text = None
    if text is not None and len(text) <= limit and _READABLE.fullmatch(text):
        return text
    hexed = "~x" + raw.hex()
    if len(hexed) <= limit:
        return hexed
    return "~h" + hashlib.sha256(raw).hexdigest()


def decode_part(text: str) -> str:
    """Inverse of :func:`encode_part` (hashed parts come back as their ``~h...`` form)."""
    if text.startswith("~x"):
        return bytes.fromhex(text[2:]).decode("utf-8", "replace")
    return text


# Typed cache keys. Canonical text T(key): equal keys (as dict keys) give equal text, different keys
# different text; only lowercase ASCII, so the case-insensitive collation cannot merge two of them.
#   i<int>  every integral number: 1, 1.0, True, Decimal("1") (they are one dict key)
#   f<repr> other floats and numbers exactly equal to one (2.5 == Fraction(5, 2)), inf, -inf
#   q<n>/<d> other rationals (Decimal("0.1"), Fraction(1, 3))
#   n None;  d<iso> date;  m<digits> naive datetime;  w<digits> aware datetime (as UTC);  v<hex> UUID
#   u<hex> str and x<hex> bytes inside a tuple or frozenset (there Beaker does not turn str into bytes)
#   t<T>,<T>...) tuple;  z<T>,<T>...) frozenset (elements sorted)
# A top-level typed key is "~" + T; longer than the room left: "~g" + SHA-256 (string keys keep
# encode_part's "~x"/"~h" forms, so the two can never meet).
_TYPED_HASH = "~g"


def encode_key(key: object, limit: int) -> str:
    """A cache key's text: strings as :func:`encode_part`, other keys in their typed form (<= ``limit``)."""
    if isinstance(key, (str, bytes)):
        return encode_part(key, limit)
    text = "~" + _typed(key)
    if len(text) <= limit:
        return text
    return _TYPED_HASH + hashlib.sha256(text.encode("ascii")).hexdigest()


def _typed(value: object) -> str:
    if value is None:
        return "n"
    if isinstance(value, str):
        return "u" + value.encode("utf-8", "surrogatepass").hex()
    if isinstance(value, bytes):
        return "x" + value.hex()
    if isinstance(value, tuple):
        return "t" + ",".join(_typed(item) for item in value) + ")"
    if isinstance(value, frozenset):
        return "z" + ",".join(sorted(_typed(item) for item in value)) + ")"
    if isinstance(value, datetime.datetime):
        offset = value.utcoffset()
        if offset is None:
            return "m" + _datetime_digits(value)
        return "w" + _datetime_digits(value.replace(tzinfo=None) - offset)
    if isinstance(value, datetime.date):
        return "d" + value.isoformat()
    if isinstance(value, uuid.UUID):
        return "v" + value.hex
    if isinstance(value, complex) and value.imag == 0:
        value = value.real
    if isinstance(value, (numbers.Real, decimal.Decimal)):  # Decimal is not registered as Real
        return _typed_number(value)
    raise InvalidCacheKey(
        f"cache key {value!r} of type {type(value).__name__} cannot be stored: use str, bytes, int, float, "
        "Decimal, Fraction, bool, None, date, datetime, UUID, or a tuple or frozenset of those"
    )


def _typed_number(value: Union[numbers.Real, decimal.Decimal]) -> str:
    if isinstance(value, numbers.Integral):
        return "i" + str(int(value))
    try:
        exact = fractions.Fraction(value)  # type: ignore[arg-type]
    except TypeError:  # a Real that Fraction does not take (e.g. numpy.float32): through float
        exact = fractions.Fraction(float(value))
    except (ValueError, OverflowError):  # NaN or infinity
        try:
            as_float = float(value)
        except ValueError:  # Decimal("sNaN")
            as_float = math.nan
        if math.isnan(as_float):
            raise InvalidCacheKey(
                "cache key NaN cannot be stored: NaN is not equal to itself, so no later lookup could find it"
            ) from None
        return "f" + repr(as_float)
    if exact.denominator == 1:
        return "i" + str(exact.numerator)
    try:
        as_float = float(exact)
    except OverflowError:  # e.g. 10**400 + 0.5 as a Decimal or Fraction: no float equals it
        as_float = math.nan
    if math.isfinite(as_float) and fractions.Fraction(as_float) == exact:  # one form for equal floats
        return "f" + repr(as_float)
    return f"q{exact.numerator}/{exact.denominator}"


def _datetime_digits(value: datetime.datetime) -> str:
    return (
        f"{value.year:04d}{value.month:02d}{value.day:02d}"
        f"{value.hour:02d}{value.minute:02d}{value.second:02d}{value.microsecond:06d}"
    )


def decode_key(text: str) -> Any:
    """Inverse of :func:`encode_key` for ``keys()`` (hashed keys come back in their stored form)."""
    if not text.startswith("~") or text.startswith(("~x", "~h", _TYPED_HASH)):
        return decode_part(text)
    try:
        value, end = _parse_typed(text, 1)
    except (ValueError, IndexError):
        return text
    return value if end == len(text) else text


def _parse_typed(text: str, pos: int) -> tuple[Any, int]:
    """One typed value starting at ``pos``: (value, position after it)."""
    tag = text[pos]
    if tag in "tz":
        items: list[Any] = []
        pos += 1
        while text[pos] != ")":
            item, pos = _parse_typed(text, pos)
            items.append(item)
            if text[pos] == ",":
                pos += 1
        return (tuple(items) if tag == "t" else frozenset(items)), pos + 1
    end = pos + 1
    while end < len(text) and text[end] not in ",)":
        end += 1
    body = text[pos + 1 : end]
    value: Any
    if tag == "n" and not body:
        value = None
    elif tag == "i":
        value = int(body)
    elif tag == "f":
        value = float(body)
    elif tag == "q":
        value = fractions.Fraction(body)
    elif tag == "u":
        value = bytes.fromhex(body).decode("utf-8", "surrogatepass")
    elif tag == "x":
        value = bytes.fromhex(body)
    elif tag == "d":
        value = datetime.date.fromisoformat(body)
    elif tag in "mw":
        value = datetime.datetime.strptime(body, "%Y%m%d%H%M%S%f")
        if tag == "w":
            value = value.replace(tzinfo=datetime.timezone.utc)
    elif tag == "v":
        value = uuid.UUID(hex=body)
    else:
        raise ValueError(f"unknown typed key tag {tag!r}")
    return value, end
