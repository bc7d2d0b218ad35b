"""What goes into the ``[session]`` column, and back.

Sessions. Beaker (1.12+) hands the backend an already serialized, base64 text:
``b64encode(serializer.dumps(dict))``, possibly encrypted (``nonce + b64(ciphertext)``). With
``data_serializer = json`` the bytes are ``zlib.compress(json.dumps(dict).encode())``. Such a blob is
opaque in the database, so :func:`encode_session` unwraps it to the JSON text itself when the blob is
exactly what that makes (one complete zlib stream with zlib's default header and nothing after it,
canonical base64, a JSON object): re-wrapping the text then gives back the same blob, so the row is
plain JSON (readable, queryable with ``JSON_VALUE``, and the shape connect-mssql-v2 uses) and nothing
is lost, without compressing the text again to prove it. Anything else (pickle, encrypted data, a
custom serializer, other compression settings) is stored unchanged.

:func:`decode_session` reverses it: a row starting with ``{`` is JSON and is re-wrapped as Beaker's
JsonSerializer would have written it; a base64 text is returned as is; anything else is corrupt.
Base64 never contains ``{``, so the two forms cannot be confused. On the per-request path the
namespace manager uses :func:`decode_session_row`, which hands Beaker the same JSON text in an
uncompressed zlib stream (Beaker only decompresses it; compressing would cost CPU for nothing) and
keeps the parsed dict for the save's comparison.

Cache values are Python objects (Beaker's ``(storedtime, expiretime, value)`` tuples), encoded by the
``serializer`` option: ``pickle`` (default; base64 of a pickle: only use it with a database you
trust, since unpickling runs code), ``json`` (plain JSON text), or any object with ``dumps``/``loads``
working on bytes, e.g. ``beaker.util.JsonSerializer`` (stored base64).
"""

from __future__ import annotations

import base64
import json
import pickle
import re
import struct
import zlib
from typing import Any, NoReturn, Optional, Union

from beaker_mssql.errors import CorruptSessionError, SerializationError
from beaker_mssql.events import security_logger, short_sid
from beaker_mssql.merge import beaker_json_text

__all__ = [
    "CacheSerializer",
    "decode_session",
    "decode_session_row",
    "describe_key",
    "encode_decoded_session",
    "encode_session",
    "is_emptied_dict",
]

_B64_TEXT = re.compile(r"[A-Za-z0-9+/=\r\n]+")


def _wrap_json(text: str) -> str:
    """What Beaker's JsonSerializer + base64 produce for this JSON text."""
    return base64.b64encode(zlib.compress(text.encode("utf-8"))).decode("ascii")


_STORED_BLOCK = 65_535  # the largest stored deflate block (RFC 1951 3.2.4)


def _wrap_json_stored(text: str) -> str:
    """A blob Beaker's JsonSerializer reads as this JSON text, with the zlib stream left uncompressed.

    Beaker only decompresses the blob handed to it on load, and any valid zlib stream (RFC 1950)
    does: stored deflate blocks (RFC 1951 3.2.4) cost a copy, where ``zlib.compress`` costs a
    compressor set-up (tens of KB of state) and the deflate search on every request.
    """
    data = text.encode("utf-8")
    parts = [b"\x78\x01"]  # deflate, 32 KB window, no dictionary; (0x7801 % 31 == 0)
    size = len(data)
    start = 0
    while True:
        chunk = data[start : start + _STORED_BLOCK] if size > _STORED_BLOCK else data
        start += len(chunk)
        final = start >= size
        parts.append(struct.pack("<BHH", 1 if final else 0, len(chunk), len(chunk) ^ 0xFFFF))
        parts.append(chunk)
        if final:
            break
    parts.append(struct.pack(">I", zlib.adler32(data)))
    return base64.b64encode(b"".join(parts)).decode("ascii")


def encode_session(blob: str) -> str:
    """Beaker's session blob -> column text (plain JSON when that is lossless, else the blob)."""
    if not isinstance(blob, str):
        raise TypeError(f"a Beaker session payload is a str, got {type(blob).__name__}")
    return encode_decoded_session(blob, beaker_json_text(blob))


def encode_decoded_session(blob: str, json_text: Optional[str]) -> str:
    """:func:`encode_session` for a blob already decoded (``merge.decode_blob_text``).

    ``json_text`` is the text :func:`beaker_mssql.merge.beaker_json_text` gives for ``blob`` (None when
    the blob is anything but Beaker's own zlib-compressed JSON object): stored when given.
    """
    return blob if json_text is None else json_text


# What Beaker leaves in a session after ``session.delete()``: the cookie bookkeeping it writes back
# while expiring the cookie, nothing of the application's.
_EMPTIED_SESSION_KEYS = frozenset({"_domain", "_path", "_expires"})
_EMPTIED_BLOB_MAX = 512  # an emptied session serializes to well under this; real ones rarely do


def is_emptied_session(blob: str) -> bool:
    """True when Beaker's blob holds an emptied session (``session.delete()``, ``clear()`` + save).

    Beaker (1.12 and later) serializes before its ``if not data: del namespace['session']`` check, so
    that deletion never fires and the emptied dict would be saved under the live id. Recognising it
    lets the backend delete the row instead, as Beaker meant. The blob comes from Beaker in this
    process (not from the database), so unpickling it is safe; only short blobs are looked at, so
    the hot path pays nothing for ordinary sessions. Encrypted blobs are never recognised.
    """
    if len(blob) > _EMPTIED_BLOB_MAX or not _B64_TEXT.fullmatch(blob):
        return False
    try:
        raw = base64.b64decode(blob, validate=True)
        if raw.startswith(b"\x80"):
            data = pickle.loads(raw)  # noqa: S301 - Beaker's own in-process output, see docstring
        else:
            data = json.loads(zlib.decompress(raw).decode("utf-8"))
    except Exception:  # anything that is not Beaker's plain pickle/json: not an emptied session
        return False
    return isinstance(data, dict) and is_emptied_dict(blob, data)


def is_emptied_dict(blob: str, data: dict[str, Any]) -> bool:
    """:func:`is_emptied_session` for a blob already decoded to the dict ``data``."""
    return len(blob) <= _EMPTIED_BLOB_MAX and set(data) <= _EMPTIED_SESSION_KEYS


def decode_session(text: str, sid: str = "") -> str:
    """Column text -> the blob Beaker expects. Raises :class:`CorruptSessionError` on garbage."""
    return decode_session_row(text, sid, exact=True)[0]


def decode_session_row(
    text: str, sid: str = "", exact: bool = False
) -> tuple[str, Optional[dict[str, Any]]]:
    """:func:`decode_session` plus the dict of a plain-JSON row (None for a base64 row).

    The namespace manager keeps the dict for the save's comparison with what Beaker writes back,
    so a row is parsed once per request. Unless ``exact``, a JSON row comes back in an uncompressed
    zlib stream (:func:`_wrap_json_stored`): Beaker reads the same JSON text from it, for less CPU.
    """
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            _corrupt(sid, "the row starts with '{' but is not a JSON object")
        return (_wrap_json(text) if exact else _wrap_json_stored(text)), parsed
    if not text or not _B64_TEXT.fullmatch(text):
        _corrupt(sid, "the row is neither a JSON object nor base64 text")
    return text, None


def _corrupt(sid: str, reason: str) -> NoReturn:
    security_logger.warning("corrupt session row %s: %s", short_sid(sid), reason)
    raise CorruptSessionError(f"session row {short_sid(sid)} cannot be decoded: {reason}")


def describe_key(key: object) -> str:
    """A cache key as the application wrote it: Beaker hands str keys over as bytes (``b'dt'``)."""
    if isinstance(key, bytes):
        return repr(key.decode("utf-8", "backslashreplace"))
    return repr(key)


class CacheSerializer:
    """Encodes cache values to column text and back with the configured serializer."""

    def __init__(self, serializer: Union[str, object] = "pickle") -> None:
        self.name = serializer if isinstance(serializer, str) else type(serializer).__name__
        self._custom: Any = None if isinstance(serializer, str) else serializer
        if isinstance(serializer, str) and serializer not in ("pickle", "json"):
            raise ValueError(f"unknown serializer {serializer!r}")

    def dumps(self, value: object, key: object = None) -> str:
        """``value`` -> text. Fails (naming the key) before anything is written."""
        try:
            if self._custom is not None:
                raw = self._custom.dumps(value)
                if isinstance(raw, str):
                    raw = raw.encode("utf-8")
                return base64.b64encode(raw).decode("ascii")
            if self.name == "json":
                return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
            return base64.b64encode(pickle.dumps(value, protocol=4)).decode("ascii")
        except Exception as exc:
            raise SerializationError(
                f"cache value for key {describe_key(key)} cannot be encoded with the {self.name} serializer: "
                f"{exc}"
            ) from exc

    def loads(self, text: str, key: object = None) -> Any:
        """Text -> value. Undecodable text raises :class:`CorruptSessionError`."""
        try:
            if self._custom is not None:
                return self._custom.loads(base64.b64decode(text, validate=True))
            if self.name == "json":
                return json.loads(text)
            return pickle.loads(base64.b64decode(text, validate=True))  # noqa: S301 - see module doc
        except Exception as exc:
            security_logger.warning("corrupt cache row for key %s: %s", describe_key(key), type(exc).__name__)
            raise CorruptSessionError(
                f"cache row for key {describe_key(key)} cannot be decoded with the {self.name} serializer: "
                f"{exc}"
            ) from exc
