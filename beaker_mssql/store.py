"""MSSQLStore: the session table, usable with or without Beaker.

One row per session: ``[sid]`` (the id), ``[session]`` (text: see :mod:`beaker_mssql.payload`) and
``[expires]`` (a server-side ``datetime``; rows at or past it are invisible and swept). Every method
is one statement (``clear``/``destroy_expired`` loop in batches) and nothing connects before the
first method call.

Failures raise subclasses of :class:`~beaker_mssql.errors.MSSQLStoreError`. Idempotent methods are
retried ``retries`` times when the connection broke or the server chose them as a deadlock victim
(1205) or timed out on a lock (1222); the broken connection is discarded.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from typing import Any, Callable, Optional, TypeVar

import pymssql

from beaker_mssql.config import CONTROL_CHARS, Settings, parse_settings
from beaker_mssql.errors import (
    ALREADY_EXISTS,
    ConnectionFailedError,
    DatabaseError,
    InvalidSessionId,
    LockNotGrantedError,
    MSSQLStoreError,
    SidCaseConflictError,
    TableMissingError,
    server_message,
    sqlserver_equivalent,
)
from beaker_mssql.events import Events, logger, security_logger, short_sid
from beaker_mssql.payload import CacheSerializer
from beaker_mssql.pool import (
    RETRYABLE_NUMBERS,
    ConnectionPool,
    PooledConnection,
    error_message,
    error_number,
    is_broken,
)
from beaker_mssql.sql import NO_EXPIRY_SECONDS, create_table_sql, escape_like, statements_for
from beaker_mssql.sweeper import Sweeper, sweeper_for

__all__ = ["MSSQLStore", "validate_sid"]

T = TypeVar("T")
MAX_SID_LENGTH = 255
_LOGIN_FAILED = frozenset({18456, 18452, 18470, 18486, 18487, 18488, 4060})

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
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


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


class _CaseConflict(Exception):
    """Internal: the upsert hit 2627 twice."""


class AppLock:
    """A held ``sp_getapplock`` lock (owner: the session of the connection that holds it)."""

    def __init__(self, store: MSSQLStore, resource: str) -> None:
        self.store = store
        self.resource = resource
        self.held = True

    def release(self) -> None:
        """Release the lock and unpin this thread's connection; a second call does nothing."""
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
        self._local = threading.local()
        self._closed = False
        self._sweeper: Optional[Sweeper] = None
        self._sweeper_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<MSSQLStore {self.settings.connection.describe()} table={self.settings.table.quoted}>"

    # -- public API ---------------------------------------------------------------------------
    def get(self, sid: str) -> Optional[str]:
        """The column text of the live row ``sid`` (exact, case-sensitive match), or None."""
        validate_sid(sid)
        row = self._run("get", lambda cur: _fetchone(cur, self.statements.get, {"sid": sid}))
        return None if row is None else str(row[0])

    def set(self, sid: str, data: str, ttl: Optional[int] = None) -> None:
        """Insert or replace ``sid`` with ``data``, expiring ``ttl`` seconds from now (one round trip)."""
        validate_sid(sid)
        if not isinstance(data, str):
            raise TypeError(f"session data must be a str, got {type(data).__name__}")
        params = {"sid": sid, "data": data, "ttl": _check_ttl(self.settings.ttl if ttl is None else ttl)}
        sql = self.statements.set

        def upsert(cur: Any) -> None:
            try:
                cur.execute(sql, params)
            except pymssql.IntegrityError as exc:
                if error_number(exc) != 2627:
                    raise
                # XACT_ABORT rolled the batch back; once more (it now updates, unless case-conflict).
                try:
                    cur.execute(sql, params)
                except pymssql.IntegrityError as again:
                    if error_number(again) != 2627:
                        raise
                    raise _CaseConflict() from again

        try:
            self._run("set", upsert)
        except _CaseConflict:
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
            raise error from None

    def touch(self, sid: str, ttl: Optional[int] = None) -> bool:
        """Push the expiry of a live row to ``ttl`` seconds from now. False if there is none."""
        validate_sid(sid)
        params = {"sid": sid, "ttl": _check_ttl(self.settings.ttl if ttl is None else ttl)}
        return self._run("touch", lambda cur: _rowcount(cur, self.statements.touch, params)) > 0

    def destroy(self, sid: str) -> bool:
        """Delete ``sid``. False if there was no such row."""
        validate_sid(sid)
        return self._run("destroy", lambda cur: _rowcount(cur, self.statements.destroy, {"sid": sid})) > 0

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
        key = self.settings.pool_key
        with _created_lock:
            lock = _create_locks.setdefault(key, threading.Lock())
        with lock:
            for attempt in (1, 2):
                try:
                    self._run("create_table", lambda cur: cur.execute(ddl), prepare=False)
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
        thread (and is used by this thread's other store calls) until :meth:`AppLock.release`.
        If the process dies, the server drops the session and with it the lock.
        """
        resource = self._lock_resource(name)
        params = {"resource": resource, "timeout_ms": int(timeout_ms)}
        self._pin()
        try:
            row = self._run(
                "applock", lambda cur: _fetchone(cur, self.statements.getapplock, params), idempotent=False
            )
        except BaseException:
            self._unpin()
            raise
        result = int(row[0]) if row and row[0] is not None else None
        if result is None or result < 0:
            self._unpin()
            # -1: not granted in time. Babelfish answers -999 where SQL Server answers -1 when
            # @LockTimeout = 0 finds the lock held (measured on Babelfish 4.3, issue 9).
            if result == -1 or (result == -999 and int(timeout_ms) == 0):
                return None
            raise LockNotGrantedError(f"sp_getapplock on {resource!r} returned {result}")
        return AppLock(self, resource)

    def _release_applock(self, lock: AppLock) -> None:
        params = {"resource": lock.resource}
        try:
            if getattr(self._local, "pinned", None) is not None:
                self._run(
                    "applock", lambda cur: _fetchone(cur, self.statements.releaseapplock, params),
                    idempotent=False,
                )
        finally:
            self._unpin()

    def _lock_resource(self, name: str) -> str:
        resource = f"beaker_mssql:{self.settings.table.schema}.{self.settings.table.name}:{name}"
        if len(resource) > 255:
            digest = hashlib.sha256(resource.encode("utf-8")).hexdigest()
            resource = resource[:180] + "~" + digest
        return resource

    def _pin(self) -> PooledConnection:
        """Check out a connection for this thread's exclusive use (nested pins share it)."""
        local = self._local
        if getattr(local, "pinned", None) is None:
            local.pinned = self._acquire("applock")
            local.depth = 0
        local.depth += 1
        return local.pinned  # type: ignore[no-any-return]

    def _unpin(self, broken: bool = False) -> None:
        local = self._local
        item = getattr(local, "pinned", None)
        if item is None:
            return
        local.depth -= 1
        if broken or local.depth <= 0:
            local.pinned = None
            local.depth = 0
            self.pool.release(item, broken=broken)

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

    def _acquire(self, method: str) -> PooledConnection:
        """A connection held outside :meth:`_run` (app locks); failures fire the same hooks."""
        try:
            return self.pool.acquire()
        except pymssql.Error as exc:
            self.events.emit("error", exc, method)
            error = self._translate(exc, method, login=True)
            self.events.emit("session_error", error, method)
            raise error from exc
        except MSSQLStoreError as exc:  # e.g. PoolTimeoutError
            self.events.emit("session_error", exc, method)
            raise

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

    def _run(
        self, method: str, operation: Callable[[Any], T], idempotent: bool = True, prepare: bool = True
    ) -> T:
        """Run ``operation(cursor)`` on a pooled connection, with the retry and error policy."""
        if prepare:
            self._prepare()
        attempt = 0
        while True:
            pinned: Optional[PooledConnection] = getattr(self._local, "pinned", None)
            item: Optional[PooledConnection] = pinned
            try:
                if item is None:
                    item = self.pool.acquire()
                cursor = item.connection.cursor()
                try:
                    result = operation(cursor)
                finally:
                    with contextlib.suppress(Exception):
                        cursor.close()
            except pymssql.Error as exc:
                login_failed = item is None
                broken = is_broken(exc) or login_failed
                if item is not None:
                    if pinned is not None:
                        if broken:
                            logger.warning(
                                "beaker_mssql: the connection holding this thread's app locks broke; "
                                "the locks are released by the server"
                            )
                            self._unpin(broken=True)
                    else:
                        self.pool.release(item, broken=broken)
                number = error_number(exc)
                # A failed login is never retried: pymssql may report a stale error number for it
                # (it keeps the most severe login error of the process), and retrying a wrong
                # password only feeds account-lockout policies.
                retryable = not login_failed and (broken or number in RETRYABLE_NUMBERS)
                self.events.emit("error", exc, method)
                if idempotent and retryable and pinned is None and attempt < self.settings.retries:
                    attempt += 1
                    logger.info(
                        "beaker_mssql: %s failed with error %s (%s); retry %d of %d",
                        method, number, "connection broken" if broken else "transient",
                        attempt, self.settings.retries,
                    )
                    continue
                error = self._translate(exc, method, login=login_failed)
                self.events.emit("session_error", error, method)
                raise error from exc
            except BaseException as exc:
                if item is not None and pinned is None:
                    self.pool.release(item)
                if isinstance(exc, MSSQLStoreError):  # e.g. PoolTimeoutError
                    self.events.emit("session_error", exc, method)
                raise
            else:
                if pinned is None:
                    self.pool.release(item)
                return result

    def _translate(self, exc: BaseException, method: str, login: bool = False) -> MSSQLStoreError:
        """A pymssql exception -> our error with a message that says what happened (no password)."""
        number = error_number(exc)
        message = server_message(exc) if isinstance(exc, pymssql.DatabaseError) else error_message(exc)
        equivalent = sqlserver_equivalent(number, message, login)
        password = self.settings.connection.password
        if password:
            message = message.replace(password, "***")
        message = " ".join(message.split())
        where = self.settings.connection.describe()
        table = self.settings.table.quoted
        if equivalent == 208 and not login:
            said = "SQL Server error 208" if number == 208 else f"error {number}: {message}"
            return TableMissingError(
                f"table {table} does not exist in {where} ({said}). Create it with "
                f"`beaker-mssql create-table --url mssql://...` (with --table {table}), set the option "
                "create_table = true, or run sql/create_sessions.sql."
            )
        if login or is_broken(exc) or equivalent in _LOGIN_FAILED or isinstance(exc, pymssql.InterfaceError):
            return ConnectionFailedError(
                f"{method}: connection to {where} failed (error {number}): {message}", number, method
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


def _fetchone(cur: Any, sql: str, params: Optional[dict[str, Any]]) -> Any:
    cur.execute(sql, params)
    return cur.fetchone()


def _fetchall(cur: Any, sql: str, params: Optional[dict[str, Any]]) -> list[Any]:
    cur.execute(sql, params)
    return list(cur.fetchall())


def _rowcount(cur: Any, sql: str, params: Optional[dict[str, Any]]) -> int:
    cur.execute(sql, params)
    return int(cur.rowcount)
