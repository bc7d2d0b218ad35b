"""The Beaker adapter: ``session.type = ext:mssql`` / ``cache.type = ext:mssql``.

Beaker constructs a namespace manager on *every* request (``Session.load``/``save``), so the
constructor does no I/O and little work: options are parsed once per distinct option set, and the
store (with its prepared SQL) and the connection pool come from a process-wide registry. One pool
exists per distinct login + table and is shared by all threads; everything is closed at exit.

Row ids:

* Sessions. Beaker's ``Session`` passes ``digest_filenames=False`` and stores its one value under
  the key ``'session'``; that value lives in the row whose sid *is* the namespace (the Beaker
  session id), so the table reads naturally and other tools can share it.
* Caches (``Cache``, ``CacheManager``, regions): one row per (namespace, key) with
  ``sid = encode(namespace) + ':' + encode(key)``. :func:`encode_part` keeps short strings of
  lowercase letters, digits and ``._-/|`` readable, writes anything else as ``~x`` + hex (so keys
  differing only by case stay distinct under the case-insensitive collation) and hashes what would
  not fit (``~h`` + SHA-256), keeping every sid within 255 characters.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import math
import re
import sys
import threading
from collections.abc import Hashable, Mapping
from types import FrameType
from typing import Any, Optional

from beaker.container import NamespaceManager
from beaker.session import Session
from beaker.synchronization import SynchronizerImpl

from beaker_mssql.config import Settings, parse_settings
from beaker_mssql.errors import (
    CorruptSessionError,
    InvalidSessionId,
    LockNotGrantedError,
    MSSQLStoreError,
    WriteOutcomeUnknownError,
)
from beaker_mssql.events import logger
from beaker_mssql.merge import decode_blob, encode_blob, merge_sessions, same_but_access_time
from beaker_mssql.payload import decode_session, encode_session, is_emptied_session
from beaker_mssql.pool import ConnectionPool
from beaker_mssql.sql import NO_EXPIRY_SECONDS
from beaker_mssql.store import AppLock, Loaded, MSSQLStore, validate_sid

__all__ = ["MSSQLNamespaceManager", "MSSQLSynchronizer", "close_all", "encode_part", "store_for"]

SESSION_KEY = "session"
_SESSION_KEY_BYTES = SESSION_KEY.encode("ascii")
NAMESPACE_LIMIT = 100
_READABLE = re.compile(r"[a-z0-9._\-/|]+")

# -- the process-wide registry ----------------------------------------------------------------
_lock = threading.Lock()
# Two levels: option dicts as Beaker passes them -> store (the per-request fast path: one sort and
# one dict lookup, no parsing, no hashing of Settings), and Settings -> store, so differently
# spelled but equal options ("true" and True) still share one store and its prepared statements.
_by_options: dict[Hashable, MSSQLStore] = {}
_stores: dict[Settings, MSSQLStore] = {}
_pools: dict[object, ConnectionPool] = {}


def store_for(options: Mapping[str, Any]) -> MSSQLStore:
    """The shared store for these options (parsed, prepared and pooled once per process)."""
    key: Optional[Hashable]
    try:
        key = tuple(sorted(options.items()))
        store = _by_options.get(key)
    except TypeError:  # an unhashable option value: parse every time
        key, store = None, None
    if store is None:
        store = _store_for_settings(parse_settings(options))
        if key is not None:
            with _lock:
                _by_options[key] = store
    return store


def _store_for_settings(settings: Settings) -> MSSQLStore:
    with _lock:
        store = _stores.get(settings)
        if store is None:
            pool = _pools.get(settings.pool_key)
            if pool is None:
                pool = _pools[settings.pool_key] = ConnectionPool.from_settings(settings)
            store = _stores[settings] = MSSQLStore.from_settings(settings, pool=pool)
    return store


def close_all() -> None:
    """Close every registered store and pool (atexit; tests use it to start clean)."""
    with _lock:
        stores, pools = list(_stores.values()), list(_pools.values())
        _stores.clear()
        _pools.clear()
        _by_options.clear()
    for store in stores:
        store.close()
    for pool in pools:
        pool.close()


atexit.register(close_all)


# -- row ids ----------------------------------------------------------------------------------
def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return str(value).encode("utf-8")


def encode_part(value: object, limit: int) -> str:
    """A collation-safe, reversible-when-possible text form of a namespace or key (<= ``limit``)."""
    raw = _as_bytes(value)
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


def _row_dict(text: str) -> Optional[dict[str, Any]]:
    """The session dict in a column text (plain JSON, or a Beaker pickle/json blob); None if opaque."""
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None
    decoded = decode_blob(text)
    return None if decoded is None else decoded[1]


def _fail_loudly_in_beaker_session(error: MSSQLStoreError) -> None:
    """Keep Beaker from turning a database outage (or a configuration error) into a logout.

    Beaker's ``invalidate_corrupt`` (on by default in SessionMiddleware) treats *any* exception from
    ``Session.load`` as corrupt data: it makes a new session id and loads again. If the database
    answers that second load, the user silently gets a fresh empty session and a new cookie although
    nothing was corrupt. So when loading failed for a database reason, switch ``invalidate_corrupt``
    off on the one ``Session`` object doing the load (found on the call stack): the error then fails
    this request instead, and the session is still there on the next one. Corrupt rows keep
    Beaker's behaviour. Must be called directly from a method Beaker's ``Session.load`` calls.
    """
    frame: Optional[FrameType] = sys._getframe(2)
    for _ in range(8):
        if frame is None:
            return
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, Session):
            if getattr(candidate, "invalidate_corrupt", False):
                candidate.invalidate_corrupt = False
                logger.warning(
                    "beaker_mssql: loading a session failed with %s (not corrupt data); failing the "
                    "request instead of letting invalidate_corrupt replace the session",
                    type(error).__name__,
                )
            return
        frame = frame.f_back


class MSSQLNamespaceManager(NamespaceManager):  # type: ignore[misc]
    """Beaker ``NamespaceManager`` over :class:`~beaker_mssql.store.MSSQLStore`."""

    def __init__(self, namespace: str, **options: Any) -> None:
        super().__init__(namespace)
        # Beaker's Session (and only it) passes digest_filenames=False.
        self.session_mode = options.get("digest_filenames") is False
        try:
            self.store = store_for(options)
        except MSSQLStoreError as exc:  # a bad option: fail the request, keep the user's session
            if self.session_mode:
                _fail_loudly_in_beaker_session(exc)
            raise
        self.settings = self.store.settings
        self._prefix = encode_part(namespace, NAMESPACE_LIMIT) + ":"
        self._local = threading.local()
        # The session row as Beaker's Session.load read it through this manager (Beaker keeps the
        # manager until its save): the version the save is conditional on, and the row's freshness.
        self._loaded: Optional[Loaded] = None

    def __repr__(self) -> str:
        return f"<MSSQLNamespaceManager {self.namespace!r} {self.store!r}>"

    # -- ids and values -----------------------------------------------------------------------
    def _is_session(self, key: object) -> bool:
        """Is ``key`` Beaker's one session value (stored in the row named by the session id)?"""
        return self.session_mode and _as_bytes(key) == _SESSION_KEY_BYTES

    def _sid(self, key: object) -> str:
        if self._is_session(key):
            return validate_sid(self.namespace)
        return self._prefix + encode_part(key, 255 - len(self._prefix))

    def _decode(self, key: object, text: str) -> Any:
        if self._is_session(key):
            return decode_session(text, self.namespace)
        return self.store.serializer.loads(text, key)

    # A value read by `key in ns` is kept (per thread, inside one read lock) for the `ns[key]`
    # Beaker's Value issues right after: one round trip instead of two.
    def acquire_read_lock(self) -> None:
        self._local.depth = getattr(self._local, "depth", 0) + 1

    def release_read_lock(self) -> None:
        self._local.depth = max(getattr(self._local, "depth", 1) - 1, 0)
        if self._local.depth == 0:
            self._local.memo = None

    def _fetch(self, key: object) -> Optional[str]:
        sid = self._sid(key)
        if self._is_session(key):
            self._loaded = self.store.load(sid)
            return self._loaded.text
        memo = getattr(self._local, "memo", None)
        if memo is not None and memo[0] == sid:
            self._local.memo = None
            return memo[1]  # type: ignore[no-any-return]
        return self.store.get(sid)

    def __getitem__(self, key: object) -> Any:
        try:
            text = self._fetch(key)
        except (CorruptSessionError, InvalidSessionId):
            raise
        except MSSQLStoreError as exc:
            if self._is_session(key):
                _fail_loudly_in_beaker_session(exc)
            raise
        if text is None:
            raise KeyError(key)
        return self._decode(key, text)

    def __contains__(self, key: object) -> bool:
        sid = self._sid(key)
        text = self.store.get(sid)
        if getattr(self._local, "depth", 0) > 0 and text is not None:
            self._local.memo = (sid, text)
        return text is not None

    def has_key(self, key: object) -> bool:
        return key in self

    def set_value(self, key: object, value: Any, expiretime: Optional[float] = None) -> None:
        """Save one value (one round trip).

        A session row lives ``ttl`` seconds (the store's setting). A cache row lives the ``expire``
        Beaker passes (so the server hides and sweeps it when Beaker would consider it stale), else
        an explicit ``ttl`` option, else "forever" (``NO_EXPIRY_SECONDS``): Beaker's own
        ``(storedtime, expiretime, value)`` check stays the authority either way.
        """
        self._local.memo = None
        sid = self._sid(key)
        if self._is_session(key):
            if is_emptied_session(value):  # session.delete(): see payload.is_emptied_session
                self.store.destroy(sid)
                self._loaded = None
            else:
                self._save_session(sid, value)
            return
        text = self.store.serializer.dumps(value, key)
        if expiretime is not None:
            ttl = min(max(1, math.ceil(expiretime)), NO_EXPIRY_SECONDS)
        else:
            ttl = self.settings.explicit_ttl or NO_EXPIRY_SECONDS
        try:
            self.store.set(sid, text, ttl=ttl)
        except WriteOutcomeUnknownError as exc:
            # A cache value is recomputed when missing: a write lost to a broken connection costs a
            # recomputation, not the request (Beaker has already handed the value to the caller).
            logger.warning("beaker_mssql: cache value for key %r not stored: %s", key, exc)

    def _save_session(self, sid: str, blob: str) -> None:
        """Beaker's save of the session: skipped, conditional, or merged (README "How saving works")."""
        loaded = self._loaded
        mine = decode_blob(blob)
        base = None
        if loaded is not None and loaded.text is not None and mine is not None:
            base = _row_dict(loaded.text)
            if base is not None and same_but_access_time(base, mine[1]) and self._fresh(loaded):
                return  # only the access time moved and the row is fresh: nothing to send
        text = encode_session(blob)

        def merge(current: str, ambiguous: bool) -> Optional[str]:
            theirs = _row_dict(current)
            if mine is None or theirs is None:
                return None
            merged = merge_sessions(base or {}, mine[1], theirs, ambiguous)
            return encode_session(encode_blob(mine[0], merged))

        self.store.save(sid, text, loaded, merge=merge)
        # Written: a second save through this manager merges against what this one wrote.
        self._loaded = Loaded(text)

    def _fresh(self, loaded: Loaded) -> bool:
        """Is the row younger than ``touch_seconds`` by the database clock?"""
        interval = self.settings.touch_seconds
        remaining = loaded.remaining
        return interval > 0 and remaining is not None and remaining > self.settings.ttl - interval

    def __setitem__(self, key: object, value: Any) -> None:
        self.set_value(key, value)

    def __delitem__(self, key: object) -> None:
        self._local.memo = None
        if not self.store.destroy(self._sid(key)):
            raise KeyError(key)

    def do_remove(self) -> None:
        """Delete this namespace's rows only (``LIKE 'prefix%' ESCAPE '\\'``)."""
        self._local.memo = None
        if self.session_mode:
            # A session's removal touches its own row only: never a cache namespace that happens
            # to share the name (an unsigned cookie can carry any id).
            self.store.destroy(validate_sid(self.namespace))
            self._loaded = None
            return
        self.store.delete_prefix(self._prefix)

    def keys(self) -> list[Any]:
        """Live keys of this namespace (hashed keys are returned in their stored ``~h...`` form)."""
        result: list[Any] = []
        if self.session_mode and self.store.get(validate_sid(self.namespace)) is not None:
            result.append(SESSION_KEY)
        sids = self.store.sids_with_prefix(self._prefix)
        result.extend(decode_part(sid[len(self._prefix) :]) for sid in sids)
        return result

    def get_creation_lock(self, key: object) -> MSSQLSynchronizer:
        """A cross-process lock for Beaker's dogpile protection (``sp_getapplock``)."""
        return MSSQLSynchronizer(self.store, "create:" + self._sid(key))


class MSSQLSynchronizer(SynchronizerImpl):  # type: ignore[misc]
    """Beaker synchronizer on ``sp_getapplock`` (one reader or writer at a time, across processes).

    The lock is owned by the session of a connection that this thread keeps checked out until the
    lock is released; the thread's other store calls meanwhile use that same connection, so a
    small pool cannot deadlock on itself.
    """

    def __init__(self, store: MSSQLStore, name: str) -> None:
        super().__init__()
        self.store = store
        self.name = name
        self._held: dict[int, AppLock] = {}
        timeout = store.settings.connection.query_timeout
        # Wait less than the query timeout, or the driver would cut the connection mid-wait.
        self.wait_ms = 300_000 if timeout == 0 else int(max(0.5, timeout - 1) * 1000)

    def do_acquire_write_lock(self, wait: bool) -> bool:
        lock = self.store.acquire_applock(self.name, timeout_ms=self.wait_ms if wait else 0)
        if lock is None:
            if wait:
                raise LockNotGrantedError(
                    f"creation lock {self.name!r} not granted within {self.wait_ms} ms"
                )
            return False
        self._held[threading.get_ident()] = lock
        return True

    def do_release_write_lock(self) -> None:
        lock = self._held.pop(threading.get_ident(), None)
        if lock is not None:
            lock.release()

    def do_acquire_read_lock(self, wait: bool) -> bool:
        """Same as the write lock: app locks here are exclusive only (Beaker holds them briefly)."""
        return self.do_acquire_write_lock(wait)

    def do_release_read_lock(self) -> None:
        self.do_release_write_lock()
