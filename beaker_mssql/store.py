"""MSSQLStore: the session table, usable with or without Beaker.

One row per session: ``[sid]`` (the id), ``[session]`` (text: see :mod:`beaker_mssql.payload`) and
``[expires]`` (a server-side ``datetime``; rows at or past it are invisible and swept). Every method
is one statement (``clear``/``destroy_expired`` loop in batches) and nothing connects before the
first method call.

Failures raise subclasses of :class:`~beaker_mssql.errors.MSSQLStoreError`. What is retried is
decided by :mod:`beaker_mssql.retry`: a transient failure is retried up to ``retries`` times within
``retry_budget`` seconds, with jittered backoff. Reads and deletes are simply run again. A write is
re-sent as is only when its failure was *definite* (the server rolled it back); after an *ambiguous*
failure (the connection broke, so it may have committed) the session save re-reads the row and
re-applies only what cannot undo a later write by someone else (see :meth:`MSSQLStore.save`), and
the unconditional :meth:`MSSQLStore.set` is not re-sent at all.

A connection whose call was interrupted by anything but a server error (a timeout exception of
gevent, ``KeyboardInterrupt``, an async exception) is in an unknown state and is closed, never
returned to the pool.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from typing import Any, Callable, Optional, TypeVar

from beaker_mssql import drivers
from beaker_mssql.config import CONTROL_CHARS, Settings, parse_settings
from beaker_mssql.diagnostics import login_failure_message, mask_url
from beaker_mssql.errors import (
    ALREADY_EXISTS,
    ConnectionFailedError,
    DatabaseError,
    InvalidSessionId,
    LockNotGrantedError,
    MSSQLStoreError,
    SaveConflictError,
    SidCaseConflictError,
    TableMissingError,
    WriteOutcomeUnknownError,
    server_message,
    sqlserver_equivalent,
)
from beaker_mssql.events import Events, logger, security_logger, short_sid
from beaker_mssql.payload import CacheSerializer
from beaker_mssql.pool import ConnectionPool, Lease, error_message, error_number, is_broken
from beaker_mssql.retry import (
    READ_ONLY_NUMBERS,
    Backoff,
    Outcome,
    classify,
    login_error_number,
    login_is_transient,
)
from beaker_mssql.sql import (
    NO_EXPIRY_SECONDS,
    XACT_ABORT_OFF,
    XACT_ABORT_STATE,
    applock_resource,
    create_table_sql,
    escape_like,
    statements_for,
)
from beaker_mssql.sweeper import Sweeper, sweeper_for

__all__ = ["Loaded", "MSSQLStore", "SaveResult", "validate_sid"]

T = TypeVar("T")
MAX_SID_LENGTH = 255
_LOGIN_FAILED = frozenset({18456, 18452, 18470, 18486, 18487, 18488, 4060})
# Merge rounds of one save when other writers keep changing the row in between. From the third
# round on the save holds a per-session app lock, so rounds are bounded by lock waits, not luck.
SAVE_ROUNDS = 100
# DB-Library errors whose message pymssql often leaves empty: words for them.
_DBLIB_TEXT = {
    20003: "the server did not answer within query_timeout",
    20047: "the connection is dead (its previous request timed out or was cut)",
    20006: "writing to the server failed",
    20004: "reading from the server failed",
}

# (connection, table) pairs whose CREATE TABLE already ran in this process.
_created_tables: set[object] = set()
_created_lock = threading.Lock()
_create_locks: dict[object, threading.Lock] = {}  # one per pool key: threads run the DDL one at a time


def validate_sid(sid: object) -> str:
    """Check an id before it goes anywhere near the server.

    1..255 characters as SQL Server counts them (UTF-16 code units: an emoji takes two), no control
    characters, no lone surrogates, no trailing space: the default collation ignores trailing spaces
    in ``=``, so ``'abc '`` would otherwise address ``'abc'``.
    """
    # The common case in a few C calls: an ASCII id has one code unit per character and no
    # surrogates, and ASCII isprintable() is exactly "no control character" (0x00-0x1f, 0x7f).
    if type(sid) is str and sid.isascii() and 0 < len(sid) <= MAX_SID_LENGTH and sid.isprintable() \
            and sid[-1] != " ":
        return sid
    problem = None
    if not isinstance(sid, str):
        problem = f"must be a str, got {type(sid).__name__}"
    elif not 1 <= _utf16_length(sid) <= MAX_SID_LENGTH:
        problem = f"must be 1-{MAX_SID_LENGTH} characters (UTF-16 code units), got {_utf16_length(sid)}"
    elif not _encodable(sid):
        problem = "must be valid Unicode (it holds a lone surrogate)"
    elif CONTROL_CHARS.search(sid):
        problem = "must not contain control characters"
    elif sid.endswith(" "):
        problem = "must not end with a space"
    if problem is not None:
        shown = short_sid(sid) if isinstance(sid, str) else type(sid).__name__
        security_logger.warning("refused session id %s: %s", shown, problem)
        raise InvalidSessionId(f"invalid session id {shown}: it {problem}")
    assert isinstance(sid, str)
    return sid


def _utf16_length(text: str) -> int:
    """Length as nvarchar counts it: characters outside the BMP take two code units."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_ttl(ttl: object) -> int:
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= NO_EXPIRY_SECONDS:
        raise ValueError(f"ttl must be an int between 1 and {NO_EXPIRY_SECONDS} seconds, got {ttl!r}")
    return ttl


class _Conflict(Exception):
    """Internal: the conditional save changed nothing, or the insert met an existing row (2627)."""


class _Ambiguous(Exception):
    """Internal: a write failed in a way that leaves its outcome unknown (it may have committed)."""

    def __init__(self, error: MSSQLStoreError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclasses.dataclass(frozen=True)
class Loaded:
    """A session row as one request loaded it: what the save needs to write safely later.

    ``text`` is None when there was no live row. ``version`` is the server's hash of the text, and
    ``remaining`` the row's seconds to live by the database clock (how fresh it is).
    """

    text: Optional[str]
    version: Optional[bytes] = None
    remaining: Optional[int] = None


ABSENT = Loaded(None)

# merge(current_text, ambiguous) -> the text to write over the current row, or None (cannot merge).
Merge = Callable[[str, bool], Optional[str]]


class SaveResult:
    """What :meth:`MSSQLStore.save` did (plain strings, for logs and tests)."""

    SAVED = "saved"  # written as given (the row was still what the request loaded)
    MERGED = "merged"  # written after merging with another writer's change
    DELETED_MEANWHILE = "deleted-meanwhile"  # the row was deleted since the load: not re-created


class AppLock:
    """A held ``sp_getapplock`` lock (owner: the session of the connection that holds it).

    The lock lives in one pooled connection, pinned to the acquiring thread until released. It can
    be released from any thread: the release is sent on that same connection.
    """

    def __init__(self, store: MSSQLStore, resource: str, lease: Lease) -> None:
        self.store = store
        self.resource = resource
        self.lease = lease
        self.held = True

    def release(self) -> None:
        """Release the lock and unpin its connection; a second call does nothing."""
        if self.held:
            self.held = False
            self.store._release_applock(self)


class MSSQLStore:
    """Session rows in a SQL Server table. Thread-safe; construct once, share everywhere."""

    def __init__(self, **options: Any) -> None:
        self._setup(parse_settings(options), None)

    @classmethod
    def from_settings(cls, settings: Settings, pool: Optional[ConnectionPool] = None) -> MSSQLStore:
        """A store for already parsed settings (optionally sharing an existing pool)."""
        store = cls.__new__(cls)
        store._setup(settings, pool)
        return store

    def _setup(self, settings: Settings, pool: Optional[ConnectionPool]) -> None:
        self.settings = settings
        self.statements = statements_for(settings.table, settings.use_utc)
        self.events = Events(settings.on_connect, settings.on_error, settings.on_session_error)
        self.serializer = CacheSerializer(settings.serializer)
        self._owns_pool = pool is None
        self.pool = pool or ConnectionPool.from_settings(settings)
        self.pool.connect_listeners.append(self._connected)
        self._backoff = Backoff()
        self._closed = False
        self._sweeper: Optional[Sweeper] = None
        self._sweeper_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<MSSQLStore {self.settings.connection.describe()} table={self.settings.table.quoted}>"

    # -- public API ---------------------------------------------------------------------------
    def get(self, sid: str) -> Optional[str]:
        """The column text of the live row ``sid`` (exact, case-sensitive match), or None."""
        return self.load(sid).text

    def load(self, sid: str) -> Loaded:
        """The live row ``sid`` with its version and remaining lifetime (one round trip)."""
        validate_sid(sid)
        row = self._run("get", lambda cur: _fetchone(cur, self.statements.get, {"sid": sid}))
        if row is None:
            return ABSENT
        return Loaded(str(row[0]), bytes(row[1]), int(row[2]))

    def save(
        self,
        sid: str,
        data: str,
        loaded: Optional[Loaded] = None,
        ttl: Optional[int] = None,
        merge: Optional[Merge] = None,
    ) -> str:
        """Write ``data`` for ``sid`` unless that would undo another writer's change; one round trip.

        ``loaded`` is what this request read (:meth:`load`); None or an absent row means the row is
        to be created. The write succeeds only if the row is still as loaded. Otherwise the row is
        read again and ``merge(current_text, ambiguous)`` combines this request's change with the
        other writer's (None: cannot merge, this request's data wins). If the row was deleted
        meanwhile (a logout), nothing is written: a deleted session is never brought back.

        After a failure that leaves the outcome unknown, the row is read again: if it holds
        ``data`` the save had committed; if it holds what was loaded it is sent again; if another
        writer changed it, only a merge that keeps their values (``ambiguous=True``) is written.
        Returns a :class:`SaveResult` value.
        """
        validate_sid(sid)
        if not isinstance(data, str):
            raise TypeError(f"session data must be a str, got {type(data).__name__}")
        ttl = _check_ttl(self.settings.ttl if ttl is None else ttl)
        version = None if loaded is None else loaded.version
        exists = loaded is not None and loaded.text is not None
        text = data
        result = SaveResult.SAVED
        ambiguous = False
        deadline = time.monotonic() + self.settings.retry_budget
        lock: Optional[AppLock] = None
        try:
            for rounds in range(1, SAVE_ROUNDS + 1):
                if rounds > 2 and time.monotonic() > deadline:
                    break
                if rounds == 3 and lock is None:
                    # Collided twice: queue for the row (a per-session app lock, granted in
                    # arrival order) instead of racing the other losers again.
                    wait_ms = int(max(0.0, deadline - time.monotonic()) * 1000)
                    lock = self.acquire_applock("save:" + sid, timeout_ms=wait_ms)
                    if lock is None:
                        break
                try:
                    if exists and version is None:
                        raise _Conflict()  # our own earlier write, version unknown: read it first
                    self._run("save", self._save_operation(sid, text, ttl, version), write=True)
                    return result
                except _Conflict:
                    pass
                except _Ambiguous as unknown:
                    ambiguous = True
                    logger.warning("beaker_mssql: save of session %s may or may not have committed (%s); "
                                   "reading the row to decide", short_sid(sid), unknown.error)
                current = self.load(sid)
                if current.text is None:
                    if exists:
                        logger.info("beaker_mssql: session %s was deleted since this request loaded it; "
                                    "not saving it again", short_sid(sid))
                        return SaveResult.DELETED_MEANWHILE
                    if not ambiguous:
                        raise self._case_conflict(sid)
                    continue  # our first save of a new row may not have committed: insert again
                if ambiguous and current.text == text:
                    return result  # the lost reply was for a committed save
                if ambiguous and current.version == version:
                    continue  # nobody wrote since the load and ours did not commit: send it again
                merged = merge(current.text, ambiguous) if merge is not None else None
                if merged is None:
                    if ambiguous:
                        error = SaveConflictError(
                            f"save of session {short_sid(sid)} on {self.settings.table.quoted}: the "
                            "connection broke mid-save and another request has written the row since; its "
                            "data cannot be merged, so this save is abandoned rather than overwrite that "
                            "write", None, "save")
                        self.events.emit("session_error", error, "save")
                        raise error
                    merged = data  # opaque data (encrypted, custom serializer): the last writer wins
                exists, version, text, result = True, current.version, merged, SaveResult.MERGED
                ambiguous = False
        finally:
            if lock is not None:
                lock.release()
        why = (
            "the connection kept failing mid-save, so whether its last attempt committed is unknown"
            if ambiguous
            else "other requests changed the row in every merge round"
        )
        error = SaveConflictError(
            f"save of session {short_sid(sid)} on {self.settings.table.quoted}: {why} within retry_budget; "
            "no other write was overwritten", None, "save")
        self.events.emit("session_error", error, "save")
        raise error

    def _save_operation(
        self, sid: str, text: str, ttl: int, version: Optional[bytes]
    ) -> Callable[[Any], None]:
        """The conditional update (``version`` given) or the insert, raising _Conflict when refused."""
        if version is None:
            params: dict[str, Any] = {"sid": sid, "data": text, "ttl": ttl}
            return lambda cur: _insert(cur, self.statements.save_insert, params)
        params = {"sid": sid, "data": text, "ttl": ttl, "version": version}

        def update(cur: Any) -> None:
            if _rowcount(cur, self.statements.save_update, params) != 1:
                raise _Conflict()

        return update

    def set(self, sid: str, data: str, ttl: Optional[int] = None) -> None:
        """Insert or replace ``sid`` with ``data``, expiring ``ttl`` seconds from now (one round trip).

        Unconditional (the last writer wins): used for cache values. After a failure that leaves
        the outcome unknown it is not re-sent (it could overwrite a later write); the error is raised.
        """
        validate_sid(sid)
        if not isinstance(data, str):
            raise TypeError(f"session data must be a str, got {type(data).__name__}")
        params = {"sid": sid, "data": data, "ttl": _check_ttl(self.settings.ttl if ttl is None else ttl)}
        sql = self.statements.set

        def upsert(cur: Any) -> None:
            try:
                _insert(cur, sql, params)
            except _Conflict:
                # Another writer inserted between our UPDATE and INSERT: once more (now it updates).
                _insert(cur, sql, params)

        try:
            self._run("set", upsert, write=True)
        except _Conflict:
            raise self._case_conflict(sid) from None
        except _Ambiguous as unknown:
            if self.get(sid) == data:
                return  # the reply was lost, the write was not
            error = WriteOutcomeUnknownError(
                f"set of {short_sid(sid)} on {self.settings.table.quoted}: {unknown.error}; the row does not "
                "show whether it was written, and it was not sent again (that could overwrite a later write)",
                getattr(unknown.error, "number", None), "set")
            self.events.emit("session_error", error, "set")
            raise error from None

    def _case_conflict(self, sid: str) -> SidCaseConflictError:
        security_logger.warning(
            "refused to save session %s: a row whose id differs only by letter case exists in %s",
            short_sid(sid), self.settings.table.quoted,
        )
        error = SidCaseConflictError(
            f"cannot save session {short_sid(sid)}: table {self.settings.table.quoted} holds a row whose "
            "id differs only by letter case (the column's collation is case-insensitive); "
            "not overwriting another session"
        )
        self.events.emit("session_error", error, "set")
        return error

    def touch(self, sid: str, ttl: Optional[int] = None) -> bool:
        """Push the expiry of a live row to ``ttl`` seconds from now. False if there is none."""
        validate_sid(sid)
        params = {"sid": sid, "ttl": _check_ttl(self.settings.ttl if ttl is None else ttl)}
        return self._run("touch", lambda cur: _rowcount(cur, self.statements.touch, params)) > 0

    def destroy(self, sid: str) -> bool:
        """Delete ``sid``. False if there was no such row.

        Retried after a broken connection; if the first attempt may have deleted the row, the
        retry finding nothing still reports True (the row is gone either way).
        """
        validate_sid(sid)
        tried: list[bool] = []

        def delete(cur: Any) -> int:
            tried.append(True)
            return _rowcount(cur, self.statements.destroy, {"sid": sid})

        deleted = self._run("destroy", delete)
        return deleted > 0 or len(tried) > 1

    def length(self) -> int:
        """The number of live rows."""
        row = self._run("length", lambda cur: _fetchone(cur, self.statements.length, None))
        return int(row[0]) if row else 0

    def all(self) -> dict[str, str]:
        """Every live row: sid -> column text (ordered by sid)."""
        rows = self._run("all", lambda cur: _fetchall(cur, self.statements.all, None))
        return {str(row[0]): str(row[1]) for row in rows}

    def clear(self) -> int:
        """Delete every row, in batches (``DELETE TOP``: needs no DDL rights, unlike TRUNCATE)."""
        return self._delete_batches("clear", self.statements.clear, {}, None, None)

    def destroy_expired(
        self, batch_size: Optional[int] = None, progress: Optional[Callable[[int], None]] = None
    ) -> int:
        """Delete expired rows in batches until a batch comes back short; returns the count.

        Small batches stay below SQL Server's 5,000-lock escalation threshold, so the sweep never
        locks the whole table. ``progress`` gets the running total after each batch.
        """
        sql = self.statements.destroy_expired
        return self._delete_batches("destroy_expired", sql, {}, batch_size, progress)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every row whose sid starts with ``prefix`` (LIKE with escaping); used for caches."""
        pattern = escape_like(prefix) + "%"
        sql = self.statements.delete_prefix
        return self._delete_batches("delete_prefix", sql, {"pattern": pattern}, None, None)

    def sids_with_prefix(self, prefix: str) -> list[str]:
        """Live sids starting with ``prefix``."""
        params = {"pattern": escape_like(prefix) + "%"}
        rows = self._run("keys", lambda cur: _fetchall(cur, self.statements.keys_prefix, params))
        return sorted(str(row[0]) for row in rows)

    def create_table(self, memory_optimized: bool = False) -> None:
        """Run the idempotent DDL (table, primary key, index on expires); safe to race.

        Threads of this process run it one at a time; processes are serialised by the app lock inside
        the DDL. Should another creator still win a race (an engine without that lock, the
        memory-optimized DDL), "already exists" (2714, 1913) means the DDL runs once more, and a
        second "already exists" counts as success. Only then is the table marked created.
        """
        ddl = create_table_sql(self.settings.table, memory_optimized=memory_optimized)

        def run_ddl(cur: Any) -> None:
            # The DDL's SET XACT_ABORT ON would outlive its batch on this pooled connection.
            restore = not memory_optimized and not _fetchall(cur, XACT_ABORT_STATE, None)[0][0]
            try:
                cur.execute(ddl)
            except drivers.ERRORS as exc:
                if restore and not is_broken(exc):
                    cur.execute(XACT_ABORT_OFF)
                raise
            if restore:
                cur.execute(XACT_ABORT_OFF)

        key = self.settings.pool_key
        with _created_lock:
            lock = _create_locks.setdefault(key, threading.Lock())
        with lock:
            for attempt in (1, 2):
                try:
                    self._run("create_table", run_ddl, prepare=False)
                    break
                except DatabaseError as exc:
                    if sqlserver_equivalent(exc.number, str(exc)) not in ALREADY_EXISTS:
                        raise
                    logger.info("beaker_mssql: create_table on %s: %s (attempt %d)",
                                self.settings.table.quoted, exc, attempt)
            with _created_lock:
                _created_tables.add(key)

    def check_table(self) -> list[str]:
        """Human-readable problems with the table's shape; [] when it is fine."""
        table = self.settings.table
        params = {"schema": table.schema, "name": table.name}
        columns = self._run(
            "check_table", lambda cur: _fetchall(cur, self.statements.columns, params), prepare=False
        )
        if not columns:
            return [f"table {table.quoted} does not exist"]
        problems: list[str] = []
        found = {str(c[0]).lower(): c for c in columns}
        expected = {
            "sid": (("nvarchar", "varchar"), "nvarchar(255) NOT NULL"),
            "session": (("nvarchar", "varchar"), "nvarchar(max) NOT NULL"),
            "expires": (("datetime", "datetime2"), "datetime NOT NULL"),
        }
        for name, (types, wanted) in expected.items():
            col = found.get(name)
            if col is None:
                problems.append(f"column [{name}] is missing (expected {wanted})")
                continue
            dtype, length, nullable = str(col[1]).lower(), col[2], str(col[3]).upper()
            if dtype not in types:
                problems.append(f"column [{name}] is {dtype}, expected {wanted}")
            elif name == "sid" and length is not None and 0 < int(length) < MAX_SID_LENGTH:
                problems.append(f"column [sid] holds {length} characters, expected 255")
            elif name == "session" and length is not None and int(length) != -1:
                problems.append(f"column [session] is {dtype}({length}), expected nvarchar(max)")
            if nullable == "YES":
                problems.append(f"column [{name}] allows NULL, expected NOT NULL")
        obj = {"object": table.quoted}
        indexes = self._run(
            "check_table", lambda cur: _fetchall(cur, self.statements.indexes, obj), prepare=False
        )
        pk = [r for r in indexes if r[1] and str(r[4]).lower() == "sid"]
        if not pk:
            problems.append("no primary key on [sid]")
        if not any(int(r[3]) == 1 and str(r[4]).lower() == "expires" for r in indexes):
            problems.append("no index on [expires] (expiry sweeps will scan the table)")
        return problems

    def stats(self) -> dict[str, object]:
        """live, expired, oldest_expires, newest_expires, data_bytes, server_time."""

        def query(cur: Any) -> dict[str, object]:
            s = self.statements
            live = _fetchone(cur, s.length, None)
            expired = _fetchone(cur, s.count_expired, None)
            agg = _fetchone(cur, s.table_stats, None)
            now = _fetchone(cur, s.server_time, None)
            return {
                "live": int(live[0]) if live else 0,
                "expired": int(expired[0]) if expired else 0,
                "oldest_expires": agg[0] if agg else None,
                "newest_expires": agg[1] if agg else None,
                "data_bytes": int(agg[2]) if agg and agg[2] is not None else 0,
                "server_time": now[0] if now else None,
            }

        return self._run("stats", query)

    def close(self) -> None:
        """Stop the sweeper and close this store's pool (if it owns it). Idempotent."""
        self._closed = True
        with self._sweeper_lock:
            sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.remove_store(self)
        with contextlib.suppress(ValueError):
            self.pool.connect_listeners.remove(self._connected)
        if self._owns_pool:
            self.pool.close()

    def __enter__(self) -> MSSQLStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- application locks --------------------------------------------------------------------
    def acquire_applock(self, name: str, timeout_ms: int = 0) -> Optional[AppLock]:
        """Take the exclusive app lock ``name`` (waiting up to ``timeout_ms``); None if not granted.

        The lock belongs to the connection's session, so the connection stays pinned to this
        thread (and serves this thread's other calls on any store of the same pool) until
        :meth:`AppLock.release`. If the process dies, the server drops the session and the lock.
        If the call is interrupted, the connection is closed: the server then drops a lock it
        may have granted meanwhile, instead of an idle pooled connection holding it.
        """
        resource = self._lock_resource(name)
        params = {"resource": resource, "timeout_ms": int(timeout_ms)}
        lease = self._pin()
        try:
            row = self._run(
                "applock", lambda cur: _fetchone(cur, self.statements.getapplock, params), write=True
            )
        except _Ambiguous as unknown:
            self.pool.unpin(lease, broken=True)
            raise unknown.error from None
        except BaseException:
            self.pool.unpin(lease)  # a no-op when _run already discarded the interrupted connection
            raise
        result = int(row[0]) if row and row[0] is not None else None
        if result is None or result < 0:
            self.pool.unpin(lease)
            # -1: not granted in time. Babelfish answers -999 where SQL Server answers -1 when
            # @LockTimeout = 0 finds the lock held (measured on Babelfish 4.3, issue 9).
            if result == -1 or (result == -999 and int(timeout_ms) == 0):
                return None
            raise LockNotGrantedError(f"sp_getapplock on {resource!r} returned {result}")
        return AppLock(self, resource, lease)

    def _release_applock(self, lock: AppLock) -> None:
        lease = lock.lease
        params = {"resource": lock.resource}
        ok = False
        try:
            if not lease.released:
                self._on_lease(lease, "applock",
                               lambda cur: _fetchone(cur, self.statements.releaseapplock, params))
            ok = True
        except drivers.ERRORS as exc:
            self.events.emit("error", exc, "applock")
            if not is_broken(exc):
                raise self._translate(exc, "applock") from exc
            # The connection died under the release: the server dropped the lock with its session, which
            # is all a release has to achieve (a save that committed under the lock stays a success).
            logger.warning("beaker_mssql: the connection broke while releasing app lock %r; the server "
                           "released it with the session", lock.resource)
        finally:
            # A release that did not complete leaves the lock in doubt: close the connection, so the
            # server drops the lock with its session.
            self.pool.unpin(lease, broken=not ok)

    def _lock_resource(self, name: str) -> str:
        table = self.settings.table
        return applock_resource(f"beaker_mssql:{table.schema}.{table.name}:{name}")

    def _pin(self) -> Lease:
        """Pin a connection to this thread (nested pins share it); failures fire the usual hooks."""
        try:
            return self.pool.pin()
        except drivers.ERRORS as exc:
            self.events.emit("error", exc, "applock")
            error = self._translate(exc, "applock", login=True)
            self.events.emit("session_error", error, "applock")
            raise error from exc
        except MSSQLStoreError as exc:  # e.g. PoolTimeoutError
            self.events.emit("session_error", exc, "applock")
            raise

    # -- machinery ----------------------------------------------------------------------------
    def _connected(self, connection: Any) -> None:
        logger.debug("beaker_mssql: new connection to %s", self.settings.connection.describe())
        self.events.emit(
            "connect",
            {
                "server": self.settings.connection.server,
                "database": self.settings.connection.database,
                "user": self.settings.connection.user,
                "connection": connection,
            },
        )

    def _prepare(self) -> None:
        """First-use work: CREATE TABLE (if asked, once per process) and starting the sweeper."""
        if self._closed:
            raise MSSQLStoreError(f"{self!r} is closed")
        if self.settings.create_table and self.settings.pool_key not in _created_tables:
            self.create_table()
        if self.settings.auto_remove and self._sweeper is None:
            with self._sweeper_lock:
                if self._sweeper is None and not self._closed:
                    self._sweeper = sweeper_for(self)

    def _on_lease(self, lease: Lease, method: str, operation: Callable[[Any], T]) -> T:
        """Run ``operation`` on a pinned lease, serialised with other threads' use of it."""
        mutex = lease.mutex
        assert mutex is not None
        with mutex:
            cursor = lease.connection.cursor()
            try:
                return operation(cursor)
            finally:
                with contextlib.suppress(Exception):
                    cursor.close()

    def _run(
        self, method: str, operation: Callable[[Any], T], write: bool = False, prepare: bool = True
    ) -> T:
        """Run ``operation(cursor)`` on a pooled connection, with the retry and error policy.

        ``write``: the operation must not be re-sent after an ambiguous failure; :class:`_Ambiguous`
        is raised instead, for the caller to decide.
        """
        if prepare:
            self._prepare()
        settings = self.settings
        deadline = time.monotonic() + settings.retry_budget
        attempt = logins = 0
        while True:
            pinned = self.pool.pinned()
            lease: Optional[Lease] = None
            sent = False
            try:
                if pinned is not None and not pinned.released:
                    sent = True
                    return self._on_lease(pinned, method, operation)
                pinned = None
                lease = self.pool.acquire()
                cursor = lease.item.connection.cursor()
                sent = True
                try:
                    result = operation(cursor)
                finally:
                    _close_cursor(cursor)
                lease.release()
                return result
            except drivers.ERRORS as exc:
                number = error_number(exc)
                broken = is_broken(exc) or not sent or number in READ_ONLY_NUMBERS
                if lease is not None:
                    lease.release(broken)
                elif pinned is not None and broken:
                    logger.warning("beaker_mssql: the connection holding this thread's app locks broke; "
                                   "the server releases the locks with it")
                    self.pool.unpin(pinned, broken=True)
                self.events.emit("error", exc, method)
                if not sent:  # the login failed: nothing reached the server
                    transient = login_is_transient(error_message(exc), self.pool.ever_connected)
                    retry = pinned is None and transient and settings.retries > 0  # 0: fail fast
                    outcome = Outcome.AMBIGUOUS
                    logins += 1
                    tries = logins
                else:
                    outcome = classify(number, broken)
                    if write and outcome is Outcome.AMBIGUOUS:
                        raise _Ambiguous(self._translate(exc, method)) from exc
                    retry = outcome is not Outcome.PERMANENT and pinned is None and attempt < settings.retries
                    if retry:
                        attempt += 1
                    tries = attempt
                if retry:
                    delay = self._backoff.delay(tries, outcome)
                    if time.monotonic() + delay < deadline:
                        logger.info(
                            "beaker_mssql: %s failed with error %s (%s); retry %d in %.0f ms",
                            method, number, "login" if not sent else outcome.value, tries, delay * 1000,
                        )
                        if delay:
                            time.sleep(delay)
                        continue
                error = self._translate(exc, method, login=not sent)
                self.events.emit("session_error", error, method)
                raise error from exc
            except (_Conflict, _Ambiguous):
                if lease is not None:
                    lease.release()
                raise
            except BaseException as exc:
                # Interrupted mid-call (or a bug): the connection's state is unknown; close it.
                if lease is not None:
                    lease.release(broken=True)
                elif pinned is not None:
                    self.pool.unpin(pinned, broken=True)
                if isinstance(exc, MSSQLStoreError):  # e.g. PoolTimeoutError
                    self.events.emit("session_error", exc, method)
                raise

    def _translate(self, exc: BaseException, method: str, login: bool = False) -> MSSQLStoreError:
        """A pymssql exception -> our error with a message that says what happened (no password)."""
        number = error_number(exc)
        message = error_message(exc)
        if login:
            number = login_error_number(number, message)
        elif isinstance(exc, drivers.DATABASE_ERRORS):
            message = server_message(exc)  # the server's text without pymssql's DB-Lib trailer
        equivalent = sqlserver_equivalent(number, message, login)
        message = " ".join(mask_url(message).split())
        if number in _DBLIB_TEXT and (not message or message == str(number)):
            message = _DBLIB_TEXT[number]
        where = self.settings.connection.describe()
        table = self.settings.table.quoted
        if equivalent == 208 and not login:
            said = "SQL Server error 208" if number == 208 else f"error {number}: {message}"
            return TableMissingError(
                f"table {table} does not exist in {where} ({said}). Create it with "
                f"`beaker-mssql create-table --url mssql://...` (with --table {table}), set the option "
                "create_table = true, or run sql/create_sessions.sql."
            )
        if login:
            conn = self.settings.connection
            raw = error_message(exc)
            text = login_failure_message(
                method, conn.server, conn.port, conn.user, conn.database, number,
                raw if raw.strip() and raw.strip() != str(number) else message,
            )
            return ConnectionFailedError(text, number, method)
        if is_broken(exc) or equivalent in _LOGIN_FAILED or isinstance(exc, drivers.INTERFACE_ERRORS):
            code = "" if number is None else f" (error {number})"
            return ConnectionFailedError(
                f"{method}: connection to {where} failed{code}: {message}", number, method
            )
        like = f" (SQL Server's {equivalent})" if equivalent != number else ""
        return DatabaseError(
            f"{method} on {table} failed: SQL Server error {number}{like}: {message}", number, method
        )

    def _delete_batches(
        self,
        method: str,
        sql: str,
        params: dict[str, Any],
        batch_size: Optional[int],
        progress: Optional[Callable[[int], None]],
    ) -> int:
        batch = self.settings.auto_remove_batch_size if batch_size is None else int(batch_size)
        if batch < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        args = dict(params, batch=batch)
        total = 0
        while True:
            deleted = self._run(method, lambda cur: _rowcount(cur, sql, args))
            total += max(deleted, 0)
            if progress is not None:
                progress(total)
            if deleted < batch:
                return total


def _close_cursor(cursor: Any) -> None:
    """Close a cursor, ignoring errors (a plain try: cheaper than contextlib.suppress per call)."""
    try:
        cursor.close()
    except Exception:  # noqa: S110 - the connection's own state decides its fate, not this close
        pass


def _fetchone(cur: Any, sql: str, params: Optional[dict[str, Any]]) -> Any:
    """The first row, with the result read to its end: an unread result would cost the next
    statement an attention (a cancel exchange) to discard it."""
    cur.execute(sql, params)
    rows = cur.fetchall()
    return rows[0] if rows else None


def _fetchall(cur: Any, sql: str, params: Optional[dict[str, Any]]) -> list[Any]:
    cur.execute(sql, params)
    return list(cur.fetchall())


def _rowcount(cur: Any, sql: str, params: Optional[dict[str, Any]]) -> int:
    cur.execute(sql, params)
    return int(cur.rowcount)


def _insert(cur: Any, sql: str, params: dict[str, Any]) -> None:
    """Run an insert-or-revive batch; a primary-key collision (2627) becomes :class:`_Conflict`."""
    try:
        cur.execute(sql, params)
    except drivers.INTEGRITY_ERRORS as exc:
        if error_number(exc) != 2627:
            raise
        raise _Conflict() from exc
