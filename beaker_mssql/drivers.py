"""The two DB-API drivers the store can use, and what differs between them.

Why two: pymssql (FreeTDS inside) is the fast default, but it cannot send a Microsoft Entra ID access
token (pymssql issue #915), and many Azure SQL databases accept only Entra ID logins. python-tds
(``pytds``, pure Python) sends one in LOGIN7's FEDAUTH feature ([MS-TDS] 2.2.6.4). Both use the
``%(name)s`` paramstyle, so :mod:`beaker_mssql.sql` serves both unchanged.

Everything driver-specific lives here (connect keywords, the exception classes, "connection is
broken"), so :mod:`beaker_mssql.pool` and :mod:`beaker_mssql.store` stay driver-agnostic.
"""

from __future__ import annotations

import ssl
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Optional

import pymssql

from beaker_mssql import pytds_overrides
from beaker_mssql.errors import ConfigurationError

if TYPE_CHECKING:
    from beaker_mssql.config import ConnectionSettings

__all__ = [
    "DRIVERS",
    "ERRORS",
    "INTEGRITY_ERRORS",
    "INTERFACE_ERRORS",
    "TokenSource",
    "credential_clock",
    "is_broken_driver_error",
    "open_connection",
    "token_source",
]

DRIVERS = ("pymssql", "pytds")

try:  # python-tds is optional: needed only with driver = pytds
    import pytds
    from pytds import tds_base as _pytds_base
except ImportError:  # pragma: no cover - the test extra installs it
    pytds = None
    _pytds_base = None

# The exception classes a store treats as "the database said no" (anything else is a bug or an interrupt).
ERRORS: tuple[type[BaseException], ...] = (pymssql.Error,)
INTEGRITY_ERRORS: tuple[type[BaseException], ...] = (pymssql.IntegrityError,)
INTERFACE_ERRORS: tuple[type[BaseException], ...] = (pymssql.InterfaceError,)
DATABASE_ERRORS: tuple[type[BaseException], ...] = (pymssql.DatabaseError,)
_BROKEN_CLASSES: tuple[type[BaseException], ...] = (pymssql.OperationalError, pymssql.InterfaceError)
if pytds is not None:
    # python-tds raises the socket's own OSError (ConnectionResetError, TimeoutError) when the server
    # goes away mid-call: for the store that is a broken connection like pymssql's 20006/20047.
    ERRORS += (pytds.Error, OSError)
    INTEGRITY_ERRORS += (pytds.IntegrityError,)
    INTERFACE_ERRORS += (pytds.InterfaceError,)
    DATABASE_ERRORS += (pytds.DatabaseError,)


def is_broken_driver_error(exc: BaseException) -> Optional[bool]:
    """True/False when the driver alone decides whether ``exc`` broke the connection; None: look at
    pymssql's number and message (:func:`beaker_mssql.pool.is_broken`)."""
    if isinstance(exc, OSError):
        return True
    if _pytds_base is not None and isinstance(exc, _pytds_base.Error):
        if isinstance(exc, _pytds_base.ClosedConnectionError):
            return True
        return None if isinstance(exc, (_pytds_base.OperationalError, _pytds_base.InterfaceError)) else False
    return None if isinstance(exc, _BROKEN_CLASSES) else False


class TokenSource:
    """An Entra ID access token, fetched again shortly before it expires.

    ``fetch`` returns a token string, or an object with ``.token`` and ``.expires_on`` (epoch seconds,
    like ``azure.core.credentials.AccessToken``). A bare string's lifetime is read from its JWT ``exp``
    claim when it has one, else assumed to be ``default_lifetime`` seconds.
    """

    refresh_margin = 300.0  # fetch a new token this many seconds before the old one expires
    default_lifetime = 3600.0

    def __init__(self, fetch: Callable[[], Any], clock: Callable[[], float] = time.time) -> None:
        self._fetch = fetch
        self.clock = clock
        self._lock = threading.Lock()
        self._token: Optional[str] = None
        self.expires_at = 0.0

    def __repr__(self) -> str:  # never show the token
        return f"<TokenSource {getattr(self._fetch, '__qualname__', self._fetch)!r}>"

    def token(self) -> str:
        """The current token; a new one when the old is within ``refresh_margin`` of expiring."""
        with self._lock:
            if self._token is None or self.clock() >= self.expires_at - self.refresh_margin:
                value = self._fetch()
                token = getattr(value, "token", value)
                if not isinstance(token, str) or not token:
                    raise ConfigurationError(f"access_token callable {self!r} must return a token string, "
                                             f"got {type(value).__name__}")
                expires = getattr(value, "expires_on", None)
                self._token = token
                self.expires_at = float(expires) if expires is not None else _jwt_exp(token, self.clock())
            return self._token

    def valid_until(self) -> float:
        """When the token a connection opened now would expire (epoch seconds)."""
        self.token()
        return self.expires_at


def _jwt_exp(token: str, now: float) -> float:
    """The ``exp`` claim of a JWT, or now + default lifetime for an opaque token."""
    import base64
    import json

    parts = token.split(".")
    if len(parts) == 3:
        try:
            padded = parts[1] + "=" * (-len(parts[1]) % 4)
            exp = json.loads(base64.urlsafe_b64decode(padded)).get("exp")
            if isinstance(exp, (int, float)):
                return float(exp)
        except ValueError:
            pass
    return now + TokenSource.default_lifetime


_AZURE_SCOPE = "https://database.windows.net/.default"
_sources: dict[object, TokenSource] = {}
_sources_lock = threading.Lock()


def token_source(spec: object) -> TokenSource:
    """The (shared, per option value) token source for an ``access_token`` option value."""
    with _sources_lock:
        source = _sources.get(spec)
        if source is None:
            source = _sources[spec] = TokenSource(_token_fetcher(spec))
        return source


def _token_fetcher(spec: object) -> Callable[[], Any]:
    if callable(spec):
        return spec
    if spec in ("azure-default", "managed-identity"):
        try:
            from azure import identity
        except ImportError:
            raise ConfigurationError(
                f"access_token = {spec!r} needs azure-identity: pip install 'beaker-mssql[azure]'"
            ) from None
        credential = (identity.DefaultAzureCredential() if spec == "azure-default"
                      else identity.ManagedIdentityCredential())
        return lambda: credential.get_token(_AZURE_SCOPE)
    raise ConfigurationError(f"access_token must be a callable, a dotted path to one, 'azure-default' or "
                             f"'managed-identity', got {spec!r}")


def credential_clock(settings: ConnectionSettings) -> Callable[[], float]:
    """The clock token expiry is measured on (a test may replace a token source's clock)."""
    if settings.access_token is None:
        return time.time
    return token_source(settings.access_token).clock


class _PytdsCursor:
    """A python-tds cursor that behaves like pymssql's where the store relies on it.

    * ``bytes`` parameters go as varbinary: python-tds would send them as varchar (``pytds.Binary``).
    * Each request is read to its end (later result sets, sp_executesql's DONEPROC): python-tds leaves
      them pending and would then send an attention (a cancel exchange) before the next request. The
      same after a server error in the middle of a reply (:meth:`_discard_rest`).
    * ``rowcount`` is the first statement's, as pymssql reports it for a DML batch.
    """

    __slots__ = ("_inner", "rowcount")

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.rowcount = -1

    def execute(self, sql: str, params: Any = None) -> None:
        if isinstance(params, dict):
            params = {k: pytds.Binary(v) if isinstance(v, bytes) else v for k, v in params.items()}
        elif isinstance(params, (tuple, list)):
            params = tuple(pytds.Binary(v) if isinstance(v, bytes) else v for v in params)
        inner = self._inner
        try:
            inner.execute(sql, params)
            self.rowcount = inner.rowcount
            if inner.description is None:
                self._drain()
        except pytds.Error as exc:
            self._discard_rest(exc)
            raise

    def fetchall(self) -> list[Any]:
        try:
            rows = list(self._inner.fetchall())
            self._drain()
        except pytds.Error as exc:
            self._discard_rest(exc)
            raise
        return rows

    def fetchone(self) -> Any:
        row = self._inner.fetchone()
        if row is None:
            self._drain()
        return row

    @property
    def description(self) -> Any:
        return self._inner.description

    def _drain(self) -> None:
        inner = self._inner
        while inner.nextset():
            if inner.description is not None:
                inner.fetchall()

    def _discard_rest(self, error: BaseException) -> None:
        """After a server error mid-request (a duplicate key in the insert half of a batch), read the
        reply's remaining tokens: python-tds raises at the error and would otherwise cancel the rest with
        an attention before the next request. Nothing to read once the connection is gone; whatever
        happens here, the caller re-raises the original error."""
        if is_broken_driver_error(error):
            return
        inner = self._inner
        for _ in range(_MAX_ERRORS_PER_REPLY):
            try:
                if not inner.nextset():
                    return
                if inner.description is not None:
                    inner.fetchall()
            except pytds.Error as again:
                if is_broken_driver_error(again):
                    return
                # python-tds reports the same server error once more, then goes on
            except Exception:  # a half-read socket (struct.error, OSError): the pool's problem
                return

    def close(self) -> None:
        self._inner.close()


# A reply holds one error per failed statement; the store's batches have at most three statements.
_MAX_ERRORS_PER_REPLY = 32


class _PytdsConnection:
    """A python-tds connection handing out :class:`_PytdsCursor`; everything else passes through."""

    __slots__ = ("_inner",)

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def cursor(self) -> _PytdsCursor:
        return _PytdsCursor(self._inner.cursor())

    def close(self) -> None:
        self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def open_connection(settings: ConnectionSettings) -> tuple[Any, float]:
    """Log in with ``settings.driver``: (connection, when its credentials expire in epoch seconds; inf
    for a password login). Autocommit on: no implicit BEGIN/COMMIT with either driver."""
    if settings.driver == "pymssql":
        return pymssql.connect(**settings.connect_kwargs()), float("inf")
    if pytds is None:
        raise ConfigurationError("driver = pytds needs python-tds: pip install python-tds")
    kwargs: dict[str, Any] = {
        "dsn": settings.server.split("\\", 1)[0] if settings.port is not None else settings.server,
        "port": settings.port or 1433,
        "database": settings.database,
        "login_timeout": settings.login_timeout,
        "timeout": settings.query_timeout or None,
        "appname": settings.appname,
        "autocommit": True,
    }
    expires = float("inf")
    if settings.access_token is not None:
        source = token_source(settings.access_token)
        token = source.token()
        expires = source.expires_at
        kwargs["access_token_callable"] = lambda: token
    else:
        kwargs["user"] = settings.user
        kwargs["password"] = settings.password
    if settings.encrypt in ("require", "strict") or settings.ca_file is not None:
        # python-tds encrypts when it has CA certificates to verify the server with: ca_file, else the
        # system's.
        kwargs["cafile"] = settings.ca_file or ssl.get_default_verify_paths().cafile
        kwargs["validate_host"] = not settings.trust_server_certificate
    return _PytdsConnection(_pytds_connect_once(kwargs)), expires


def _pytds_connect_once(kwargs: dict[str, Any]) -> Any:
    """One login attempt with python-tds (see :mod:`beaker_mssql.pytds_overrides`): the server's own
    error, or the socket's, comes straight back, so retry.py classifies it and the pool's rate limit
    counts every attempt."""
    with pytds_overrides.active() as installed:
        try:
            return pytds.connect(**kwargs)
        except TimeoutError as exc:
            if installed:
                raise
            # python-tds gave up after its own retries with a bare TimeoutError: report its last error.
            cause = exc.__cause__
            if isinstance(cause, Exception):
                raise cause from None
            raise
        except Exception as exc:
            if not type(exc).__module__.startswith("OpenSSL"):
                raise
            # pyOpenSSL's errors escape python-tds as they are. The socket closed or reset under the
            # handshake (a server restarting) is a network failure, retried like a refused connection;
            # a certificate or protocol refusal is not.
            if type(exc).__name__ in ("SysCallError", "ZeroReturnError"):
                raise ConnectionResetError(f"connection reset during the TLS handshake: {exc}") from None
            raise pytds.OperationalError(_tls_failure_text(exc)) from None


def _tls_failure_text(exc: Exception) -> str:
    """pyOpenSSL's ``[('SSL routines', '', 'certificate verify failed')]`` as one readable line."""
    detail = exc.args[0] if exc.args else None
    parts = detail if isinstance(detail, list) else []
    reason = "; ".join(str(p[-1]) for p in parts if isinstance(p, tuple) and p and p[-1]) or str(exc) \
        or type(exc).__name__
    hint = ""
    if "certificate verify failed" in reason:
        hint = (". The server's certificate is not signed by a CA python-tds trusts: give that CA's PEM "
                "file as ca_file (the system's CAs are used otherwise)")
    return f"TLS handshake with the server failed: {reason}{hint}"
