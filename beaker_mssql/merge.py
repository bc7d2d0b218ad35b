"""Beaker session dicts for the write path: read a blob, compare, and merge two writers' changes.

Beaker hands the backend a serialized blob (base64 of a pickle, or of zlib-compressed JSON, unless it
is encrypted or uses a custom serializer). To skip a save that changes nothing but the access time,
and to merge a save with a concurrent writer's, the namespace manager needs the dicts. This module
is that translation and the merge rule; it does no I/O.

The merge rule (top-level keys; see README "How saving works"):

* keys this request set or deleted (compared with what it loaded) take this request's value;
* keys only the other writer changed keep their new value;
* ``_accessed_time`` becomes the later of the two, ``_creation_time`` the row's own;
* after a save whose outcome is unknown (the connection broke mid-save), a key is written only where
  the row still holds what this request loaded: a retry never overwrites a value somebody else wrote
  after us (it may only be re-applying our own earlier write).
"""

from __future__ import annotations

import base64
import binascii
import json
import pickle
import zlib
from typing import Any, Optional

__all__ = ["ACCESS_KEY", "BlobFormat", "decode_blob", "merge_sessions", "same_but_access_time"]

ACCESS_KEY = "_accessed_time"
CREATION_KEY = "_creation_time"
_MISSING = object()


class BlobFormat:
    """How a Beaker blob was made, so a merged dict can be written back the same way."""

    JSON = "json"
    PICKLE = "pickle"


def decode_blob(blob: str) -> Optional[tuple[str, dict[str, Any]]]:
    """``(format, dict)`` for an unencrypted pickle or json Beaker blob; None for anything else.

    Only blobs Beaker made in this process, or rows of our own table, come here: the same trust
    Beaker itself puts in the table when it unpickles a session.
    """
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        if raw[:1] == b"\x80":
            data = pickle.loads(raw)  # noqa: S301 - Beaker's own format, see the docstring
            fmt = BlobFormat.PICKLE
        else:
            data = json.loads(zlib.decompress(raw).decode("utf-8"))
            fmt = BlobFormat.JSON
    except Exception:  # encrypted, custom serializer, or garbage: not ours to read
        return None
    return (fmt, data) if isinstance(data, dict) else None


def encode_blob(fmt: str, data: dict[str, Any]) -> str:
    """The blob Beaker's own serializer would make for ``data`` (PickleSerializer uses protocol 2)."""
    if fmt == BlobFormat.JSON:
        raw = zlib.compress(json.dumps(data).encode("utf-8"))
    else:
        raw = pickle.dumps(data, 2)
    return base64.b64encode(raw).decode("ascii")


def same_but_access_time(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Do two session dicts differ at most in ``_accessed_time``?"""
    if a.keys() != b.keys():
        return False
    try:
        return all(a[k] == b[k] for k in a if k != ACCESS_KEY)
    except Exception:  # a value whose == raises: treat as changed
        return False


def _changed(base: dict[str, Any], mine: dict[str, Any]) -> set[str]:
    keys = set(base) | set(mine)
    keys.discard(ACCESS_KEY)
    keys.discard(CREATION_KEY)
    out = set()
    for key in keys:
        try:
            if base.get(key, _MISSING) != mine.get(key, _MISSING):
                out.add(key)
        except Exception:
            out.add(key)
    return out


def merge_sessions(
    base: dict[str, Any], mine: dict[str, Any], theirs: dict[str, Any], ambiguous: bool = False
) -> dict[str, Any]:
    """This request's changes (``base`` -> ``mine``) applied on top of the row as it is now (``theirs``)."""
    merged = dict(theirs)
    for key in _changed(base, mine):
        if ambiguous:
            try:
                untouched = theirs.get(key, _MISSING) == base.get(key, _MISSING)
            except Exception:
                untouched = False
            if not untouched:
                continue  # somebody wrote it after we loaded (maybe after our own lost write): theirs
        value = mine.get(key, _MISSING)
        if value is _MISSING:
            merged.pop(key, None)
        else:
            merged[key] = value
    times = [t for t in (mine.get(ACCESS_KEY), theirs.get(ACCESS_KEY)) if isinstance(t, (int, float))]
    if times:
        merged[ACCESS_KEY] = max(times)
    if CREATION_KEY not in merged and CREATION_KEY in mine:
        merged[CREATION_KEY] = mine[CREATION_KEY]
    return merged
