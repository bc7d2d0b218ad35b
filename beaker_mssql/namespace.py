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
  ``sid = encode(namespace) + ':' + encode(key)``, always within 255 characters and safe under the
  case-insensitive collation; two keys share a row exactly when they are one dict key, as in
  Beaker's memory, file and database backends. The encoding is :mod:`beaker_mssql.keys`.

Beaker's ``Session`` gets the reactions of the reference backends where this backend has to refuse
something: an id it cannot store (``'abc '``, 256 characters) is replaced by a new one while the
session loads (:func:`_replace_refused_session_id`), and a save that collides by letter case with
another user's row moves the client to a new id (:meth:`MSSQLNamespaceManager._save_under_new_id`).
"""

from __future__ import annotations

import atexit
import functools
import json
import math
import sys
import threading
import warnings
from collections.abc import Hashable, Mapping
from types import FrameType
from typing import Any, Optional

from beaker.container import NamespaceManager, Value
from beaker.session import Session
from beaker.synchronization import SynchronizerImpl

from beaker_mssql.config import Settings, parse_settings
from beaker_mssql.errors import (
    CorruptSessionError,
    InvalidSessionId,
    LockNotGrantedError,
    MSSQLStoreError,
    SerializationError,
    SidCaseConflictError,
    UncachedValueWarning,
    WriteOutcomeUnknownError,
)
from beaker_mssql.events import logger, security_logger, short_sid
from beaker_mssql.keys import as_bytes, decode_key, encode_key, encode_part
from beaker_mssql.merge import (
    decode_blob,
    decode_blob_text,
    encode_blob,
    merge_sessions,
    same_but_access_time,
)
from beaker_mssql.payload import (
    decode_session_row,
    describe_key,
    encode_decoded_session,
    encode_session,
    is_emptied_dict,
)
from beaker_mssql.pool import ConnectionPool
from beaker_mssql.sql import NO_EXPIRY_SECONDS
from beaker_mssql.store import AppLock, Loaded, MSSQLStore, validate_sid

__all__ = [
    "MSSQLNamespaceManager",
    "MSSQLSynchronizer",
    "close_all",
    "decode_key",
    "encode_key",
    "encode_part",
    "store_for",
]

SESSION_KEY = "session"
_SESSION_KEY_BYTES = SESSION_KEY.encode("ascii")
NAMESPACE_LIMIT = 100

# -- the process-wide registry ----------------------------------------------------------------
_lock = threading.Lock()
# Two levels: option dicts as Beaker passes them -> store (the per-request fast path: one sort and
# one dict lookup, no parsing, no hashing of Settings), and Settings -> store, so differently
# spelled but equal options ("true" and True) still share one store and its prepared statements.
_by_options: dict[Hashable, MSSQLStore] = {}
_stores: dict[Settings, MSSQLStore] = {}
_pools: dict[object, ConnectionPool] = {}
# The options and store of the last call: an application passes the same options on every request,
# and comparing two small dicts is cheaper than sorting one into a key.
_last: Optional[tuple[dict[str, Any], MSSQLStore]] = None


def store_for(options: Mapping[str, Any]) -> MSSQLStore:
    """The shared store for these options (parsed, prepared and pooled once per process)."""
    global _last
    last = _last
    if last is not None:
        try:
            if last[0] == options:
                return last[1]
        except Exception:  # noqa: S110 - a value whose == raises: take the general path below
            pass
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
    _last = (dict(options), store)
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
    global _last
    with _lock:
        _last = None
        stores, pools = list(_stores.values()), list(_pools.values())
        _stores.clear()
        _pools.clear()
        _by_options.clear()
    for store in stores:
        store.close()
    for pool in pools:
        pool.close()


atexit.register(close_all)


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


def _beaker_session_in(method: str) -> Optional[Session]:
    """The Beaker ``Session`` whose ``method`` (``load``/``save``) is running below us, if any.

    Only a few frames are looked at: Beaker calls the namespace manager directly from these methods.
    """
    frame: Optional[FrameType] = sys._getframe(2)
    for _ in range(8):
        if frame is None:
            return None
        candidate = frame.f_locals.get("self")
        if frame.f_code.co_name == method and isinstance(candidate, Session):
            return candidate
        frame = frame.f_back
    return None


def _replace_refused_session_id(sid: str) -> str:
    """An id this backend refuses (``'abc '``, 256 characters) behaves like an unknown one.

    The memory backend answers such a cookie with a fresh session; here the id can never reach the
    server (:func:`~beaker_mssql.store.validate_sid` logs the refusal on the security logger). So
    while Beaker's ``Session.load`` builds this manager, give that session a new id with Beaker's
    own ``_create_id`` (new id, new cookie, ``is_new``), exactly what it does for a client that sent
    no cookie; ``load`` then finds no row and starts an empty session. This works with
    ``invalidate_corrupt`` off (pyramid_beaker's default), where an error would fail every request
    until the cookie is cleared. Outside ``Session.load`` the refusal stays an error.
    """
    try:
        return validate_sid(sid)
    except InvalidSessionId:
        session = _beaker_session_in("load")
        if session is None:
            return sid  # raised again, by the first store call
    session._create_id()
    new_sid = str(session.id)
    security_logger.warning("gave the client a new session %s in place of a refused id", short_sid(new_sid))
    return new_sid


def _computed_by_createfunc() -> bool:
    """Is this write Beaker's ``Value.get_value`` storing what ``createfunc`` just computed?

    Frames: this function, ``set_value`` here, Beaker's ``Value.set_value``, and its caller. Only a
    direct ``Value.get_value`` caller counts: a ``put`` (even one made inside a createfunc) is not.
    """
    frame = sys._getframe(2)
    caller = frame.f_back
    return (
        frame.f_code is Value.set_value.__code__
        and caller is not None
        and caller.f_code is Value.get_value.__code__
    )


def _warn_uncached(key: object, error: SerializationError) -> None:
    """``get(createfunc=...)`` keeps its computed value when the serializer cannot store it."""
    message = f"{error}; returning the computed value without caching it"
    logger.warning("beaker_mssql: %s", message)
    warnings.warn(message, UncachedValueWarning, stacklevel=5)


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
        if self.session_mode:
            self.namespace = namespace = _replace_refused_session_id(namespace)
        # Per-thread read-lock depth and memo: caches only (Beaker's Session never asks `key in ns`
        # before `ns[key]`), so a session's manager, built on every request, skips making one.
        self._local: Optional[threading.local] = None if self.session_mode else threading.local()
        # The session row as Beaker's Session.load read it through this manager (Beaker keeps the
        # manager until its save): the version the save is conditional on, and the row's freshness.
        self._loaded: Optional[Loaded] = None
        # (loaded row, its dict) when the load already parsed the row: the save compares with it.
        self._loaded_dict: Optional[tuple[Loaded, dict[str, Any]]] = None

    @functools.cached_property
    def _prefix(self) -> str:
        """``encode(namespace) + ':'``: cache rows' sid prefix (computed on first use only)."""
        return encode_part(self.namespace, NAMESPACE_LIMIT) + ":"

    def __repr__(self) -> str:
        return f"<MSSQLNamespaceManager {self.namespace!r} {self.store!r}>"

    # -- ids and values -----------------------------------------------------------------------
    def _is_session(self, key: object) -> bool:
        """Is ``key`` Beaker's one session value (stored in the row named by the session id)?"""
        if not self.session_mode:
            return False
        if type(key) is str:  # the common case, without encoding the key
            return key == SESSION_KEY
        return as_bytes(key) == _SESSION_KEY_BYTES

    def _sid(self, key: object) -> str:
        if self._is_session(key):
            return validate_sid(self.namespace)
        return self._prefix + encode_key(key, 255 - len(self._prefix))

    def _decode(self, key: object, text: str) -> Any:
        if self._is_session(key):
            blob, parsed = decode_session_row(text, self.namespace)
            loaded = self._loaded
            if parsed is not None and loaded is not None and loaded.text is text:
                self._loaded_dict = (loaded, parsed)
            return blob
        return self.store.serializer.loads(text, key)

    def _forget_memo(self) -> None:
        if self._local is not None:
            self._local.memo = None

    # A value read by `key in ns` is kept (per thread, inside one read lock) for the `ns[key]`
    # Beaker's Value issues right after: one round trip instead of two.
    def acquire_read_lock(self) -> None:
        if self._local is not None:
            self._local.depth = getattr(self._local, "depth", 0) + 1

    def release_read_lock(self) -> None:
        if self._local is not None:
            self._local.depth = max(getattr(self._local, "depth", 1) - 1, 0)
            if self._local.depth == 0:
                self._local.memo = None

    def _fetch(self, key: object) -> Optional[str]:
        sid = self._sid(key)
        if self._is_session(key):
            self._loaded = self.store.load(sid)
            return self._loaded.text
        memo = None if self._local is None else getattr(self._local, "memo", None)
        if memo is not None and memo[0] == sid:
            self._forget_memo()
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
        if self._local is not None and getattr(self._local, "depth", 0) > 0 and text is not None:
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
        self._forget_memo()
        sid = self._sid(key)
        if self._is_session(key):
            if not isinstance(value, str):
                raise TypeError(f"a Beaker session payload is a str, got {type(value).__name__}")
            decoded = decode_blob_text(value)  # once, for every use below
            if decoded is not None and is_emptied_dict(value, decoded[1]):
                # session.delete(): see payload.is_emptied_session
                self.store.destroy(sid)
                self._loaded = None
            else:
                try:
                    self._save_session(sid, value, decoded)
                except SidCaseConflictError as conflict:
                    self._save_under_new_id(value, conflict)
            return
        try:
            text = self.store.serializer.dumps(value, key)
        except SerializationError as exc:
            if _computed_by_createfunc():
                _warn_uncached(key, exc)
                return
            raise
        if expiretime is not None:
            ttl = min(max(1, math.ceil(expiretime)), NO_EXPIRY_SECONDS)
        else:
            ttl = self.settings.explicit_ttl or NO_EXPIRY_SECONDS
        try:
            self.store.set(sid, text, ttl=ttl)
        except WriteOutcomeUnknownError as exc:
            # A cache value is recomputed when missing: a write lost to a broken connection costs a
            # recomputation, not the request (Beaker has already handed the value to the caller).
            logger.warning("beaker_mssql: cache value for key %s not stored: %s", describe_key(key), exc)

    def _save_session(
        self, sid: str, blob: str, decoded: Optional[tuple[str, dict[str, Any], Optional[str]]]
    ) -> None:
        """Beaker's save of the session: skipped, conditional, or merged (README "How saving works").

        ``decoded`` is ``merge.decode_blob_text(blob)``, done once by the caller.
        """
        loaded = self._loaded
        mine = None if decoded is None else (decoded[0], decoded[1])
        base = None
        if loaded is not None and loaded.text is not None and mine is not None:
            cached = self._loaded_dict
            base = cached[1] if cached is not None and cached[0] is loaded else _row_dict(loaded.text)
            if base is not None and same_but_access_time(base, mine[1]) and self._fresh(loaded):
                return  # only the access time moved and the row is fresh: nothing to send
        text = encode_decoded_session(blob, None if decoded is None else decoded[2])

        def merge(current: str, ambiguous: bool) -> Optional[str]:
            theirs = _row_dict(current)
            if mine is None or theirs is None:
                return None
            merged = merge_sessions(base or {}, mine[1], theirs, ambiguous)
            return encode_session(encode_blob(mine[0], merged))

        self.store.save(sid, text, loaded, merge=merge)
        # Written: a second save through this manager merges against what this one wrote.
        self._loaded = Loaded(text)

    def _save_under_new_id(self, blob: str, conflict: SidCaseConflictError) -> None:
        """React to a case conflict at save the way the reference backends would: a session of its own.

        The client sent a case variant of another user's id (possible with unsigned cookies); the
        case-insensitive primary key cannot hold both rows. Beaker's memory backend would simply keep
        two sessions, so move this client to a new id (Beaker's ``regenerate_id``: new id, new cookie,
        same data) and save there; the other row is never touched. Outside ``Session.save`` the
        :class:`~beaker_mssql.errors.SidCaseConflictError` propagates.
        """
        session = _beaker_session_in("save")
        if session is None:
            raise conflict
        old = short_sid(self.namespace)
        session.regenerate_id()
        new_sid = validate_sid(session.id)
        self._loaded = None  # a new row: created, never merged with anything
        self._save_session(new_sid, blob, decode_blob_text(blob))
        security_logger.warning(
            "session id %s collides by letter case with another session's row; saved the client's "
            "session under the new id %s instead", old, short_sid(new_sid),
        )

    def _fresh(self, loaded: Loaded) -> bool:
        """Is the row younger than ``touch_seconds`` by the database clock?"""
        interval = self.settings.touch_seconds
        remaining = loaded.remaining
        return interval > 0 and remaining is not None and remaining > self.settings.ttl - interval

    def __setitem__(self, key: object, value: Any) -> None:
        self.set_value(key, value)

    def __delitem__(self, key: object) -> None:
        self._forget_memo()
        if not self.store.destroy(self._sid(key)):
            raise KeyError(key)

    def do_remove(self) -> None:
        """Delete this namespace's rows only (``LIKE 'prefix%' ESCAPE '\\'``)."""
        self._forget_memo()
        if self.session_mode:
            # A session's removal touches its own row only: never a cache namespace that happens
            # to share the name (an unsigned cookie can carry any id).
            self.store.destroy(validate_sid(self.namespace))
            self._loaded = None
            return
        self.store.delete_prefix(self._prefix)

    def keys(self) -> list[Any]:
        """Live keys of this namespace (hashed keys come back in their stored ``~h``/``~g`` form)."""
        result: list[Any] = []
        if self.session_mode and self.store.get(validate_sid(self.namespace)) is not None:
            result.append(SESSION_KEY)
        sids = self.store.sids_with_prefix(self._prefix)
        result.extend(decode_key(sid[len(self._prefix) :]) for sid in sids)
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
