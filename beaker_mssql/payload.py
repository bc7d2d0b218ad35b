"""What goes into the ``[session]`` column, and back.

Sessions. Beaker (1.12+) hands the backend an already serialized, base64 text:
``b64encode(serializer.dumps(dict))``, possibly encrypted (``nonce + b64(ciphertext)``). With
``data_serializer = json`` the bytes are ``zlib.compress(json.dumps(dict).encode())``. Such a blob is
opaque in the database, so :func:`encode_session` unwraps it to the JSON text itself when, and only
when, re-wrapping that text gives back exactly the same blob: the row is then plain JSON (readable,
queryable with ``JSON_VALUE``, and the shape connect-mssql-v2 uses) and nothing is lost. Anything
else (pickle, encrypted data, a custom serializer) is stored unchanged.

:func:`decode_session` reverses it: a row starting with ``{`` is JSON and is re-wrapped as Beaker's
JsonSerializer would have written it; a base64 text is returned as is; anything else is corrupt.
Base64 never contains ``{``, so the two forms cannot be confused.

Cache values are Python objects (Beaker's ``(storedtime, expiretime, value)`` tuples), encoded by the
``serializer`` option: ``pickle`` (default; base64 of a pickle: only use it with a database you
trust, since unpickling runs code), ``json`` (plain JSON text), or any object with ``dumps``/``loads``
working on bytes, e.g. ``beaker.util.JsonSerializer`` (stored base64).
"""

from __future__ import annotations

import base64
import binascii
import json
import pickle
import re
import zlib
from typing import Any, Union

from beaker_mssql.errors import CorruptSessionError, SerializationError
from beaker_mssql.events import security_logger, short_sid

__all__ = ["CacheSerializer", "decode_session", "describe_key", "encode_session"]

_B64_TEXT = re.compile(r"[A-Za-z0-9+/=\r\n]+")


def _wrap_json(text: str) -> str:
    """What Beaker's JsonSerializer + base64 produce for this JSON text."""
    return base64.b64encode(zlib.compress(text.encode("utf-8"))).decode("ascii")


def _unwrap_json(blob: str) -> Union[str, None]:
    """The JSON text inside a Beaker json-serializer blob, or None if ``blob`` is something else."""
    if not blob or len(blob) % 4 or not _B64_TEXT.fullmatch(blob):
        return None
    try:
        raw = base64.b64decode(blob, validate=True)
        text = zlib.decompress(raw).decode("utf-8")
        parsed = json.loads(text)
    except (binascii.Error, zlib.error, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(parsed, dict) or not text.startswith("{"):
        return None
    return text


def encode_session(blob: str) -> str:
    """Beaker's session blob -> column text (plain JSON when that is lossless, else the blob)."""
    if not isinstance(blob, str):
        raise TypeError(f"a Beaker session payload is a str, got {type(blob).__name__}")
    text = _unwrap_json(blob)
    if text is not None and _wrap_json(text) == blob:
        return text
    return blob


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
    return isinstance(data, dict) and set(data) <= _EMPTIED_SESSION_KEYS


def decode_session(text: str, sid: str = "") -> str:
    """Column text -> the blob Beaker expects. Raises :class:`CorruptSessionError` on garbage."""
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            _corrupt(sid, "the row starts with '{' but is not a JSON object")
        return _wrap_json(text)
    if not text or not _B64_TEXT.fullmatch(text):
        _corrupt(sid, "the row is neither a JSON object nor base64 text")
    return text


def _corrupt(sid: str, reason: str) -> None:
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
