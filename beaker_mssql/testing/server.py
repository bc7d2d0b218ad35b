"""SQLServerStandIn: a TDS listener on 127.0.0.1 in front of the in-process T-SQL engine.

This module is the server's lifecycle (start/stop/close, accept loop), its counters, faults, clock and
back door, ``RealServer`` with the same surface, and ``run_standin`` for the CLI. One client connection
(its thread and requests) is ``connection.py``.
"""

from __future__ import annotations

import logging
import secrets
import signal
import socket
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, Union, cast
from urllib.parse import quote, unquote, urlsplit

from .clock import Clock
from .connection import SERVER_NAME, Connection, SessionLike
from .faults import Faults
from .profiles import Profile, detect_profile, get_profile
from .results import Message, ResultSet, SQLError
from .tls import ServerCertificate, TlsOption

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("beaker_mssql.testing")


class _EngineLike(Protocol):
    def connect(self, database: Optional[str] = None, login: str = "sa") -> Any: ...

    def close(self) -> None: ...


EngineFactory = Callable[[Clock, str, Optional[str], Any], _EngineLike]


def _default_engine_factory(clock: Clock, database: str, data_file: Optional[str], hooks: Any) -> _EngineLike:
    from .engine import Engine

    engine: Engine = Engine(clock, database=database, data_file=data_file, hooks=hooks)
    return engine


def _cancelled_types() -> tuple[type[BaseException], ...]:
    try:
        from .engine import Cancelled
    except ImportError:  # pragma: no cover - only while the engine package is missing
        return ()
    return (Cancelled,)


class _Hooks:
    """EngineHooks: counts statements and applies raise_error faults before each one runs."""

    def __init__(self, server: SQLServerStandIn) -> None:
        self._server = server

    def before_statement(self, session: Any, sql_text: str) -> None:
        self._server._before_statement(session, sql_text)


class SQLServerStandIn:
    """A SQL Server look-alike that pymssql logs into over TCP; the data lives in-process.

    Use it as a context manager, through the pytest fixtures, or with ``run_standin`` from the CLI.
    ``stop()``/``start()`` restart the listener on the same port and keep the data, which is how tests
    simulate a server restart or failover.
    """

    def __init__(self, port: int = 0, database: str = "test", user: str = "sa",
                 password: Optional[str] = None, data_file: Optional[str] = None,
                 utc_offset: Optional[timedelta] = None, host: str = "127.0.0.1",
                 users: Optional[dict[str, str]] = None, log_sql: bool = False,
                 *, engine_factory: Optional[EngineFactory] = None, tls: TlsOption = False,
                 profile: Union[str, Profile, None] = None) -> None:
        # Which engine to behave like: sqlserver (default), azure or babelfish (profiles.py);
        # None reads $BEAKER_MSSQL_PROFILE.
        self.profile: Profile = get_profile(profile)
        self.host = host
        self.port = port
        self.database = database
        self.user = user
        self.password = password if password is not None else "Si-" + secrets.token_urlsafe(12)
        self.data_file = data_file
        self.log_sql = log_sql
        self.sql_log: list[str] = []
        self.clock = Clock(utc_offset)
        self._initial_utc_offset = self.clock.utc_offset
        self.faults = Faults()
        self.is_standin = True
        self._credentials = {user.lower(): self.password}
        for name, secret in (users or {}).items():
            self._credentials[name.lower()] = secret
        self._tokens: dict[str, tuple[str, datetime]] = {}  # Entra ID test token -> (principal, expiry UTC)
        self._engine_factory: EngineFactory = engine_factory or _default_engine_factory
        self._engine: Optional[_EngineLike] = None
        self._cancelled: tuple[type[BaseException], ...] = ()
        self._lock = threading.Lock()
        self._listener: Optional[socket.socket] = None
        self._accept_thread: Optional[threading.Thread] = None
        self._connections: set[Connection] = set()
        self._by_spid: dict[int, Connection] = {}
        self._totals = {"logins": 0, "login_failures": 0, "requests": 0, "statements": 0, "connections": 0,
                        "attentions": 0, "last_login_error": 0}
        self._per_connection: dict[int, dict[str, Any]] = {}
        self._conn_numbers = 0
        self._backdoor: Optional[SessionLike] = None
        self._backdoor_lock = threading.Lock()
        # TLS: tls=True makes a self-signed certificate, tls=(certfile, keyfile) uses those; off by default
        self._tls_option = tls
        self._certificate: Optional[ServerCertificate] = ServerCertificate(tls) if tls else None

    @property
    def tls_ca_file(self) -> Optional[str]:
        """The PEM file a client verifying the stand-in's certificate trusts (None without TLS)."""
        return self._certificate.ca_file if self._certificate is not None else None

    # -- lifecycle --------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._listener is not None

    @property
    def engine(self) -> Engine:
        """The in-process engine (created on first start; kept across stop()/start())."""
        if self._engine is None:
            self._engine = self._engine_factory(self.clock, self.database, self.data_file, _Hooks(self))
            if hasattr(self._engine, "profile"):
                self._engine.profile = self.profile
            self._cancelled = _cancelled_types()
        return cast("Engine", self._engine)

    def start(self) -> SQLServerStandIn:
        """Listen (again) on ``port``; the first start picks a free port when ``port`` is 0."""
        if self._listener is not None:
            return self
        self.engine  # noqa: B018 - create it before the first client can arrive
        if self._tls_option and self._certificate is None:  # started again after close()
            self._certificate = ServerCertificate(self._tls_option)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self.port))
            listener.listen(128)
        except OSError:
            listener.close()
            raise
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._accept_thread = threading.Thread(target=self._accept_loop, args=(listener,),
                                               name=f"standin-accept-{self.port}", daemon=True)
        self._accept_thread.start()
        log.info("SQL Server stand-in listening on %s:%d", self.host, self.port)
        return self

    def stop(self) -> None:
        """Stop listening and drop every connection (their open transactions roll back); keep the data."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        try:
            listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        except OSError:
            pass
        listener.close()
        if self._accept_thread is not None:
            self._accept_thread.join(5)
            self._accept_thread = None
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            conn.close()

    def failover(self, seconds: float, number: int = 40613) -> None:
        """A failover as Azure SQL or an availability group does it: every connection is dropped (open
        transactions roll back, committed data stays) and logins are refused with ``number`` (40613
        "database not currently available" by default; 40197 and 4060 are also seen) for ``seconds`` of
        stand-in clock time, then accepted again.
        """
        now = self.clock.utcnow
        self.faults.refuse_logins_until(now() + timedelta(seconds=seconds), now, number)
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            conn.close()

    def close(self) -> None:
        """stop() and close the engine (which writes ``data_file`` if there is one)."""
        self.stop()
        with self._backdoor_lock:
            if self._backdoor is not None:
                self._backdoor.close()
                self._backdoor = None
        if self._engine is not None:
            self._engine.close()
            self._engine = None
        if self._certificate is not None:
            self._certificate.close()
            self._certificate = None

    def __enter__(self) -> SQLServerStandIn:
        return self.start()

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _addr = listener.accept()
            except OSError:
                return  # listener closed by stop()
            if self._listener is not listener:
                sock.close()
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._conn_numbers += 1
                conn = Connection(self, sock, self._conn_numbers)
                self._connections.add(conn)
                self._totals["connections"] += 1
            conn.start()

    # -- what connections call --------------------------------------------------------------------------

    def issue_token(self, principal: str = "app@contoso.onmicrosoft.com", lifetime: float = 3600.0) -> str:
        """A test Entra ID access token the stand-in accepts (LOGIN7 FEDAUTH, security-token library)
        until ``lifetime`` seconds of stand-in time (``clock.advance`` expires it) have passed."""
        token = "standin." + secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = (principal, self.clock.utcnow() + timedelta(seconds=lifetime))
        return token

    def _check_token(self, token: str) -> Optional[str]:
        """The principal of a known, unexpired token; None for a wrong or expired one."""
        with self._lock:
            entry = self._tokens.get(token)
        if entry is None or self.clock.utcnow() >= entry[1]:
            return None
        return entry[0]

    def _check_credentials(self, user: str, password: str) -> bool:
        expected = self._credentials.get(user.lower())
        return expected is not None and secrets.compare_digest(expected.encode(), password.encode())

    def _engine_connect(self, database: Optional[str], login: str) -> SessionLike:
        session: SessionLike = self.engine.connect(database, login=login)
        return session

    def _register(self, conn: Connection) -> None:
        with self._lock:
            self._by_spid[conn.spid] = conn
            entry: dict[str, Any] = {"open": True}
            entry.update(conn.info)
            entry["counters"] = conn.counters
            self._per_connection[conn.spid] = entry

    def _unregister(self, conn: Connection) -> None:
        with self._lock:
            self._connections.discard(conn)
            if self._by_spid.get(conn.spid) is conn:
                del self._by_spid[conn.spid]
            entry = self._per_connection.get(conn.spid)
            if entry is not None and entry.get("counters") is conn.counters:
                entry["open"] = False

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._totals[name] += n

    def _count_login(self, ok: bool, error: Optional[int] = None) -> None:
        with self._lock:
            self._totals["logins" if ok else "login_failures"] += 1
            if error is not None:
                self._totals["last_login_error"] = error

    def _log_sql(self, sql: str) -> None:
        with self._lock:
            self.sql_log.append(sql)

    def _before_statement(self, session: Any, sql_text: str) -> None:
        if session is self._backdoor:
            return  # the back door is invisible to counters and faults
        spid = getattr(session, "session_id", 0)
        conn = self._by_spid.get(spid)
        if conn is not None:
            conn.counters["statements"] += 1
        with self._lock:  # _count("statements") inlined: this runs for every statement
            self._totals["statements"] += 1
        if self.faults.active:
            error = self.faults.statement_error(sql_text, spid, str(getattr(session, "database", "?")),
                                                SERVER_NAME)
            if error is not None:
                raise error

    # -- public helpers ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``mssql://user:password@host:port/database`` (contains the password: do not log it)."""
        credentials = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}"
        return f"mssql://{credentials}@{self.host}:{self.port}/{self.database}"

    def connect(self, **kwargs: Any) -> Any:
        """A pymssql connection to this server (keyword arguments go to ``pymssql.connect``)."""
        return _pymssql_connect(self, **kwargs)

    def stats(self) -> dict[str, Any]:
        """Counters since start or the last reset_stats(); ``per_connection`` is keyed by SPID."""
        with self._lock:
            result: dict[str, Any] = dict(self._totals)
            result["connections_open"] = len(self._by_spid)
            per: dict[int, dict[str, Any]] = {}
            for spid, entry in self._per_connection.items():
                item = {k: v for k, v in entry.items() if k != "counters"}
                item.update(entry["counters"])
                per[spid] = item
            result["per_connection"] = per
            totals_io = [e["counters"] for e in self._per_connection.values()]
        result["bytes_in"] = sum(c["bytes_in"] for c in totals_io)
        result["bytes_out"] = sum(c["bytes_out"] for c in totals_io)
        return result

    def reset_stats(self) -> None:
        """Zero every counter, forget closed connections, clear ``sql_log``."""
        with self._lock:
            for key in self._totals:
                self._totals[key] = 0
            self._per_connection = {spid: entry for spid, entry in self._per_connection.items()
                                    if entry["open"]}
            for entry in self._per_connection.values():
                counters = entry["counters"]
                for key in counters:
                    counters[key] = 0
            self.sql_log.clear()

    def reset(self) -> None:
        """Between tests: faults off, counters zero, clock on real time with its first offset; data kept."""
        self.faults.clear()
        reset_clock(self.clock, self._initial_utc_offset)
        self.reset_stats()

    def wait_for_connections(self, count: int = 0, timeout: float = 5.0) -> bool:
        """Wait until exactly ``count`` client sockets are open (logged in or not); True if it got there.

        A client's close() returns before the server has seen the socket go, so tests that count
        connections (or need a dropped client's transaction rolled back) wait here first.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                open_now = len(self._connections)
            if open_now == count:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def execute(self, sql: str) -> list[tuple[Any, ...]]:
        """Run ``sql`` in-process on a private autocommit session: the rows of every result set.

        A back door for fixtures and assertions that must not show up in the counters or be hit by faults.
        Raises SQLError on the first error message.
        """
        with self._backdoor_lock:
            if self._backdoor is None:
                self._backdoor = self._engine_connect(self.database, self.user)
            events = self._backdoor.execute(sql)
        rows: list[tuple[Any, ...]] = []
        for event in events:
            if isinstance(event, Message) and event.is_error:
                raise SQLError(event.number, event.text, event.severity, event.state, event.line)
            if isinstance(event, ResultSet):
                rows.extend(event.rows)
        return rows

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return (f"<SQLServerStandIn mssql://{self.user}:***@{self.host}:{self.port}/{self.database} "
                f"{state} profile={self.profile.name}>")

    __str__ = __repr__


def _pymssql_connect(server: SQLServerStandIn | RealServer, **kwargs: Any) -> Any:
    """``pymssql.connect`` to ``server`` with its credentials; ``kwargs`` add to or override them.

    pymssql is imported here, not at module level: the wire protocol and engine need no driver.
    """
    import pymssql

    params: dict[str, Any] = {"server": server.host, "port": str(server.port), "user": server.user,
                              "password": server.password, "database": server.database}
    params.update(kwargs)
    return pymssql.connect(**params)


class RealServer:
    """The same surface as SQLServerStandIn for a real SQL Server named by a URL (no clock, faults, stats)."""

    is_standin = False

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("mssql", "mssql+pymssql", "sqlserver"):
            raise ValueError(f"BEAKER_MSSQL_TEST_URL has the scheme {parts.scheme!r}; a SQL Server URL "
                             "looks like mssql://user:password@host:1433/database")
        self.url = url
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 1433
        self.user = unquote(parts.username or "sa")
        self.password = unquote(parts.password or "")
        self.database = parts.path.lstrip("/") or "master"
        self._profile: Optional[Profile] = None

    def connect(self, **kwargs: Any) -> Any:
        """A pymssql connection to this server (keyword arguments go to ``pymssql.connect``)."""
        return _pymssql_connect(self, **kwargs)

    @property
    def profile(self) -> Profile:
        """The engine profile this server matches (asked once: @@VERSION, EngineEdition, RCSI)."""
        if self._profile is None:
            (version, edition), = self.execute(
                "SELECT @@VERSION, CAST(SERVERPROPERTY('EngineEdition') AS int)")
            rcsi: Optional[bool] = None
            try:
                rows = self.execute(
                    "SELECT is_read_committed_snapshot_on FROM sys.databases WHERE name = DB_NAME()")
                rcsi = bool(rows[0][0]) if rows and rows[0][0] is not None else None
            except Exception:  # an engine without that column: decide from the rest
                rcsi = None
            engine_edition = None if edition is None else int(edition)
            self._profile = detect_profile(str(version or ""), engine_edition, rcsi)
        return self._profile

    def execute(self, sql: str) -> list[tuple[Any, ...]]:
        """Run ``sql`` with autocommit; the rows of every result set."""
        conn = self.connect(autocommit=True)
        try:
            cursor = conn.cursor()
            cursor.execute(sql)
            rows: list[tuple[Any, ...]] = []
            while True:
                if cursor.description is not None:
                    rows.extend(tuple(r) for r in cursor.fetchall())
                if not cursor.nextset():
                    break
            return rows
        finally:
            conn.close()

    def start(self) -> RealServer:
        return self

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<RealServer mssql://{self.user}:***@{self.host}:{self.port}/{self.database}>"

    __str__ = __repr__


# A stand-in in a process of its own serves each connection on its own thread, and a long statement
# (a sweep's DELETE batch) is pure Python that holds the GIL. With CPython's default 5 ms switch
# interval, a connection waiting for its turn loses up to 5 ms at every hand-over of the GIL, so a
# single-row read during a sweep could outlast a whole batch; 0.5 ms keeps it to the batch in
# progress. Only set where the stand-in owns the process (never inside a test run).
STANDALONE_SWITCH_INTERVAL = 0.0005


def run_standin(host: str = "127.0.0.1", port: int = 14330, database: str = "test", user: str = "sa",
                password: Optional[str] = None, data_file: Optional[str] = None,
                utc_offset: Optional[timedelta] = None, log_sql: bool = False,
                ready: Optional[Callable[[SQLServerStandIn], None]] = None,
                stop_event: Optional[threading.Event] = None,
                profile: Union[str, Profile, None] = None) -> int:
    """Serve until SIGINT/SIGTERM (or ``stop_event``); print the URL once to stdout. Returns an exit code.

    The CLI's ``beaker-mssql standin`` calls this. The URL line is the only thing printed, so scripts
    can read it (``url=$(beaker-mssql standin | head -1)``).
    """
    done_event = stop_event or threading.Event()
    server = SQLServerStandIn(port=port, database=database, user=user, password=password,
                              data_file=data_file, utc_offset=utc_offset, host=host, log_sql=log_sql,
                              profile=profile)
    previous: dict[signal.Signals, Any] = {}
    switch_interval = sys.getswitchinterval()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda _s, _f: done_event.set())
        sys.setswitchinterval(STANDALONE_SWITCH_INTERVAL)
    try:
        server.start()
        print(server.url, flush=True)
        if ready is not None:
            ready(server)
        while not done_event.wait(0.5):
            pass
    finally:
        server.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        sys.setswitchinterval(switch_interval)
    return 0


def reset_clock(clock: Clock, utc_offset: timedelta) -> None:
    """Put a test-moved clock back on real time with the given offset (used between tests)."""
    clock.unfreeze()
    clock.set(datetime.now(timezone.utc))
    clock.utc_offset = utc_offset


__all__ = ["RealServer", "SQLServerStandIn", "reset_clock", "run_standin"]
