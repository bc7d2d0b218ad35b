"""A small thread-safe pool of pymssql connections.

Why not a connection per request: a SQL Server login costs several round trips (prelogin, TLS,
login7, environment changes), more than the session read itself. Why not SQLAlchemy: one dependency
for one table of three columns.

* ``pool_size`` connections are kept; up to ``pool_max_overflow`` more are opened under load.
  Those surplus connections are closed once they sat idle for ``surplus_idle`` seconds (10 by
  default), so sustained load reuses them instead of paying a login per request, and a quiet
  period shrinks the pool back. A caller finding all ``size + overflow`` in use waits up to
  ``pool_timeout`` seconds, then gets :class:`~beaker_mssql.errors.PoolTimeoutError`.
* Idle connections are reused last-in-first-out, so a quiet period lets the surplus age out.
* A connection older than ``pool_recycle`` seconds is closed at checkout (servers and load
  balancers drop long-lived idle connections).
* Logins happen outside the pool lock, so one slow login does not block every other thread.
  Constructing a pool does no I/O.
* Connections are opened with ``autocommit=True``: pymssql then sends no implicit ``BEGIN
  TRANSACTION``/``COMMIT``; the one multi-statement write carries its own transaction.
* A connection that raised a "connection broken" error is discarded, never reused.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable, Optional

from beaker_mssql import drivers
from beaker_mssql.config import ConnectionSettings, Settings
from beaker_mssql.errors import ConnectionFailedError, PoolTimeoutError
from beaker_mssql.retry import login_is_transient

__all__ = ["BROKEN_NUMBERS", "ConnectionPool", "Lease", "error_message", "error_number", "is_broken"]

# DB-Library numbers meaning the connection is gone or unusable.
BROKEN_NUMBERS = frozenset({20002, 20003, 20004, 20006, 20009, 20017, 20019, 20020, 20047})
BROKEN_MESSAGES = (
    "dbprocess is dead",
    "adaptive server connection failed",
    "tds server connection failed",
    "write to the server failed",
    "read from the server failed",
    "not connected",
    "unexpected eof from the server",
    "connection reset",
    "server connection timed out",
)


def error_number(exc: BaseException) -> Optional[int]:
    """The SQL Server / DB-Library error number of a pymssql exception, if it carries one. A socket's
    own OSError (python-tds) has none: its errno is not a server error number."""
    if isinstance(exc, OSError):
        return None
    number = getattr(exc, "number", None)
    if isinstance(number, int):
        return number
    if exc.args:
        first = exc.args[0]
        if isinstance(first, tuple) and first and isinstance(first[0], int):
            return first[0]
        if isinstance(first, int):
            return first
    return None


def error_message(exc: BaseException) -> str:
    """The server's message text of a pymssql exception (bytes decoded); a socket error's own words
    (``[Errno 111] Connection refused``)."""
    if isinstance(exc, OSError):
        return str(exc) or type(exc).__name__
    if exc.args:
        first = exc.args[0]
        if isinstance(first, tuple) and len(first) > 1:
            text = first[1]
            return text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        if isinstance(first, bytes):
            return first.decode("utf-8", "replace")
        return str(first)
    return type(exc).__name__


def is_broken(exc: BaseException) -> bool:
    """Does ``exc`` mean the connection is dead (so: discard it, and maybe retry elsewhere)?"""
    verdict = drivers.is_broken_driver_error(exc)
    if verdict is not None:
        return verdict
    if error_number(exc) in BROKEN_NUMBERS:
        return True
    text = error_message(exc).lower()
    return any(marker in text for marker in BROKEN_MESSAGES)


class PooledConnection:
    """A driver connection, its birth time (for ``pool_recycle``) and when its Entra ID token expires."""

    __slots__ = ("connection", "created", "expires", "idle_since")

    def __init__(self, connection: Any, created: float, expires: float = float("inf")) -> None:
        self.connection = connection
        self.created = created
        self.idle_since = created
        self.expires = expires  # credential_clock() time; a connection is not reused past it


class Lease:
    """One checkout of a pooled connection: give it back with :meth:`release`, exactly once.

    Why an object per checkout: an exception can arrive at any bytecode (a ``gevent.Timeout``, a
    ``KeyboardInterrupt``, an async exception set on the thread), also between ``acquire()``
    returning and the caller's ``try``, or on entry to ``release()``. A lease that is dropped without
    having been released gives its slot back from ``__del__`` and closes the connection, whose state
    is then unknown: a pool slot can never leak, and a half-used connection is never reused.
    ``connection`` is the caller's only while the lease is out.
    """

    __slots__ = ("item", "mutex", "out", "owner", "pool")

    def __init__(self, pool: ConnectionPool, item: PooledConnection) -> None:
        self.pool = pool
        self.item = item
        self.out = True
        self.mutex: Optional[threading.Lock] = None  # set while pinned: serialises use across threads
        self.owner = 0  # the thread a pinned lease belongs to

    @property
    def connection(self) -> Any:
        return self.item.connection

    # The pooled item's clock, for pool_recycle and surplus trimming (tests age connections this way).
    @property
    def created(self) -> float:
        return self.item.created

    @created.setter
    def created(self, value: float) -> None:
        self.item.created = value

    @property
    def idle_since(self) -> float:
        return self.item.idle_since

    @idle_since.setter
    def idle_since(self, value: float) -> None:
        self.item.idle_since = value

    @property
    def released(self) -> bool:
        return not self.out

    def release(self, broken: bool = False) -> None:
        """Give the connection back (closing it when ``broken``); a second call does nothing."""
        if self.out:
            self.out = False
            self.pool._checkin(self.item, broken)

    def __del__(self) -> None:
        if self.out:
            self.out = False
            self.pool._reclaim(self.item)


class ConnectionPool:
    """Thread-safe LIFO pool with overflow, recycling and a checkout timeout."""

    surplus_idle = 10.0  # seconds an idle connection beyond pool_size is kept
    # While logins fail, at most one login attempt per this many seconds per pool from different
    # threads: the others in between get the last failure at once. An outage then costs the server
    # a trickle of logins, not one per waiting thread per retry (no stampede when it comes back).
    probe_interval = 0.25

    def __init__(
        self,
        settings: ConnectionSettings,
        size: int = 5,
        max_overflow: int = 10,
        recycle: int = 3600,
        timeout: float = 30.0,
        on_connect: Optional[Callable[[Any], None]] = None,
        connect: Optional[Callable[..., Any]] = None,
    ) -> None:
        self.settings = settings
        self.size = size
        self.max_overflow = max_overflow
        self.recycle = recycle
        self.timeout = timeout
        self.connect_listeners: list[Callable[[Any], None]] = [] if on_connect is None else [on_connect]
        self._connect = connect
        self._credential_clock = drivers.credential_clock(settings)
        self.expiry_margin = 60.0  # replace a token-authenticated connection this long before expiry
        # The hot paths (checkout, checkin) take the condition's lock directly: the same lock, without
        # Condition.__enter__/__exit__'s Python-level calls on every use.
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._idle: list[PooledConnection] = []
        self._total = 0  # open connections + logins in progress
        self._checked_out = 0
        self._waiting = 0  # threads blocked in acquire()
        self._closed = False
        self._lost: collections.deque[PooledConnection] = collections.deque()
        self._pins: dict[int, tuple[Lease, int]] = {}  # thread ident -> (pinned lease, depth)
        self._login_failure: Optional[Exception] = None  # the last failed login while logins fail
        self._last_login = -1e9
        self._last_prober = 0
        self.ever_connected = False
        self._stats = {"connects": 0, "discarded": 0, "recycled": 0, "waits": 0, "wait_time": 0.0,
                       "checkouts": 0, "timeouts": 0, "reclaimed": 0, "login_failures": 0,
                       "logins_skipped": 0}

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionPool:
        """The pool a store with these settings uses (the one place the pool_* options are read)."""
        return cls(
            settings.connection,
            size=settings.pool_size,
            max_overflow=settings.pool_max_overflow,
            recycle=settings.pool_recycle,
            timeout=settings.pool_timeout,
        )

    def __repr__(self) -> str:
        return f"<ConnectionPool {self.settings.describe()} size={self.size} overflow={self.max_overflow}>"

    # -- checkout / checkin -------------------------------------------------------------------
    def acquire(self) -> Lease:
        """Check a connection out (reusing the most recent idle one, or logging in)."""
        if self._lost:
            self._drain_lost()
        deadline: Optional[float] = None
        waited_since: Optional[float] = None
        while True:
            stale: Optional[PooledConnection] = None
            with self._mutex:
                if self._closed:
                    where = self.settings.describe()
                    raise ConnectionFailedError(f"the connection pool for {where} is closed")
                if self._idle:
                    item = self._idle.pop()
                    if (self.recycle >= 0 and time.monotonic() - item.created > self.recycle) or (
                            item.expires != float("inf")
                            and self._credential_clock() >= item.expires - self.expiry_margin):
                        self._total -= 1
                        self._stats["recycled"] += 1
                        stale = item
                    else:
                        self._checked_out += 1
                        self._stats["checkouts"] += 1
                        if waited_since is not None:
                            self._stats["wait_time"] += time.monotonic() - waited_since
                        return Lease(self, item)
                elif self._total < self.size + self.max_overflow:
                    self._total += 1
                    self._checkout_done(waited_since)
                    break  # log in below, outside the lock
                else:
                    now = time.monotonic()
                    if deadline is None:
                        deadline = now + self.timeout
                        waited_since = now
                        self._stats["waits"] += 1
                    remaining = deadline - now
                    if remaining <= 0:
                        self._stats["timeouts"] += 1
                        self._stats["wait_time"] += now - (waited_since or now)
                        raise PoolTimeoutError(
                            f"no database connection became free within {self.timeout:g} s "
                            f"(pool_size={self.size}, pool_max_overflow={self.max_overflow}, "
                            f"server {self.settings.describe()}); raise pool_size or pool_timeout"
                        )
                    self._waiting += 1
                    try:
                        self._cond.wait(remaining)
                    finally:
                        self._waiting -= 1
                    continue
            if stale is not None:
                _close_quietly(stale.connection)
        try:
            connection, expires = self._probe_login()
            return Lease(self, PooledConnection(connection, time.monotonic(), expires))
        except BaseException:
            with self._cond:
                self._total -= 1
                self._checked_out -= 1
                self._cond.notify()
            raise

    def _probe_login(self) -> tuple[Any, float]:
        """Log in, unless logins are failing and another thread tried less than probe_interval ago."""
        now = time.monotonic()
        me = threading.get_ident()
        with self._cond:
            failure = self._login_failure
            # Another thread's attempt failed a moment ago: share its answer. (A thread's own retry
            # is paced by its own backoff, and a caller trying again after an error is not held up.)
            recent = now - self._last_login < self.probe_interval
            if failure is not None and recent and self._last_prober != me:
                self._stats["logins_skipped"] += 1
                # A copy (each caller gets its own traceback) with the driver's attributes: python-tds
                # keeps the server's number in attributes, not in args.
                raise copy.copy(failure)
            self._last_login = now
            self._last_prober = me
        try:
            connection, expires = self._login()
        except Exception as exc:
            with self._cond:
                # Only an outage is worth rate-limiting; a wrong password is reported to each caller.
                transient = login_is_transient(error_message(exc), self.ever_connected)
                self._login_failure = exc if transient else None
                self._stats["login_failures"] += 1
            raise
        with self._cond:
            self._login_failure = None
            self.ever_connected = True
        return connection, expires

    def _checkout_done(self, waited_since: Optional[float]) -> None:
        self._checked_out += 1
        self._stats["checkouts"] += 1
        if waited_since is not None:
            self._stats["wait_time"] += time.monotonic() - waited_since

    def _login(self) -> tuple[Any, float]:
        if self._connect is not None:
            connection, expires = self._connect(**self.settings.connect_kwargs()), float("inf")
        else:
            connection, expires = drivers.open_connection(self.settings)
        with self._cond:
            self._stats["connects"] += 1
        try:
            for listener in list(self.connect_listeners):
                listener(connection)
        except BaseException:
            _close_quietly(connection)
            raise
        return connection, expires

    def release(self, lease: Lease, broken: bool = False) -> None:
        """Return a checked-out connection (same as ``lease.release(broken)``)."""
        lease.release(broken)

    def _checkin(self, item: PooledConnection, broken: bool) -> None:
        """Take a connection back; a broken one (or any, once the pool is closed) is closed instead."""
        close = broken
        now = time.monotonic()
        surplus: list[PooledConnection] = []
        with self._mutex:
            self._checked_out -= 1
            if broken:
                self._stats["discarded"] += 1
            close = close or self._closed
            if close:
                self._total -= 1
            else:
                item.idle_since = now
                self._idle.append(item)
            # LIFO: the longest-idle connections are at the bottom of the stack.
            while (
                self._total > self.size
                and self._idle
                and not self._waiting
                and now - self._idle[0].idle_since > self.surplus_idle
            ):
                surplus.append(self._idle.pop(0))
                self._total -= 1
            if self._waiting:  # nobody waits on most checkins: skip Condition.notify's Python-level work
                self._cond.notify()
        if close:
            _close_quietly(item.connection)
        for extra in surplus:
            _close_quietly(extra.connection)
        if self._lost:
            self._drain_lost()

    def _reclaim(self, item: PooledConnection) -> None:
        """A lease died unreleased (see :class:`Lease`): close its connection and free the slot.

        Runs from ``__del__``, possibly while this very thread holds the pool lock, so it never
        blocks on the lock: when the lock is busy the connection waits in ``_lost`` for the next
        checkout or checkin.
        """
        if self._cond.acquire(blocking=False):
            try:
                self._checked_out -= 1
                self._total -= 1
                self._stats["reclaimed"] += 1
                self._cond.notify()
            finally:
                self._cond.release()
            _close_quietly(item.connection)
        else:
            self._lost.append(item)

    def _drain_lost(self) -> None:
        while True:
            try:
                item = self._lost.popleft()
            except IndexError:
                return
            self._reclaim(item)

    # -- pinning: one connection kept by a thread (its app locks live in that connection's session) --
    def pin(self) -> Lease:
        """Check out a connection for this thread's exclusive use; nested pins share it.

        Every store on this pool then runs this thread's statements on the pinned connection (see
        :meth:`pinned`), so a thread holding a lock never waits for a second connection of a small
        pool (which other threads in the same situation could hold: a self-deadlock).
        """
        ident = threading.get_ident()
        with self._cond:
            entry = self._pins.get(ident)
            if entry is not None:
                self._pins[ident] = (entry[0], entry[1] + 1)
                return entry[0]
        lease = self.acquire()
        lease.mutex = threading.Lock()
        lease.owner = ident
        with self._cond:
            self._pins[ident] = (lease, 1)
        return lease

    def pinned(self) -> Optional[Lease]:
        """This thread's pinned lease, if it holds one."""
        if not self._pins:
            return None
        entry = self._pins.get(threading.get_ident())
        return None if entry is None else entry[0]

    def unpin(self, lease: Lease, broken: bool = False) -> None:
        """Undo one :meth:`pin` of ``lease`` (from any thread); the last one (or ``broken``) returns it."""
        with self._cond:
            entry = self._pins.get(lease.owner)
            if entry is None or entry[0] is not lease:
                done = True
            else:
                depth = entry[1] - 1
                done = broken or depth <= 0
                if done:
                    del self._pins[lease.owner]
                else:
                    self._pins[lease.owner] = (lease, depth)
        if done:
            lease.release(broken)

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        """``with pool.connection() as conn:`` (discarding it if a broken-connection error escapes)."""
        lease = self.acquire()
        broken = True  # anything but a normal exit (or a non-connection error) leaves it in doubt
        try:
            yield lease.connection
            broken = False
        except Exception as exc:
            broken = is_broken(exc)
            raise
        finally:
            lease.release(broken)

    # -- housekeeping -------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters for benchmarks and monitoring."""
        with self._cond:
            return dict(
                self._stats,
                size=self._total,
                idle=len(self._idle),
                checked_out=self._checked_out,
                pool_size=self.size,
                max_overflow=self.max_overflow,
            )

    def dispose(self) -> None:
        """Close idle connections (checked-out ones close when returned); the pool stays usable."""
        with self._cond:
            idle, self._idle = self._idle, []
            self._total -= len(idle)
        for item in idle:
            _close_quietly(item.connection)

    def close(self) -> None:
        """Close every idle connection and refuse further checkouts."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.dispose()

    @property
    def closed(self) -> bool:
        return self._closed


def _close_quietly(connection: Any) -> None:
    with contextlib.suppress(Exception):
        connection.close()
