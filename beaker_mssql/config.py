"""Options -> a typed, validated, hashable :class:`Settings`.

Options arrive from three places with the same names: ``MSSQLStore(**options)``, the dicts given to
Beaker's ``SessionMiddleware``/``CacheManager``, and ini files (after the ``session.`` / ``cache.``
prefix), where every value is a string. So every value is coerced here, once, and a bad one raises
:class:`ConfigurationError` naming the option and the value (a password is shown as ``***``).

Beaker also hands the namespace manager its own keys (``data_dir``, ``lock_dir``, ``timeout``...):
the known ones are accepted and ignored; an unknown key only logs a warning, because future Beaker
versions add keys and a session store should not break on upgrade.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
from collections.abc import Mapping
from typing import Any, Callable, Optional, Union
from urllib.parse import parse_qsl, unquote

from beaker_mssql.diagnostics import closest
from beaker_mssql.errors import ConfigurationError
from beaker_mssql.events import logger

__all__ = [
    "ConfigurationError",
    "Settings",
    "TableName",
    "parse_settings",
    "parse_table_name",
    "parse_url",
    "resolve_dotted",
]

DEFAULT_TTL = 86400
MASK = "***"

# Keys Beaker (sessions, caches, regions, middleware) passes along that mean nothing to us.
BEAKER_KEYS = frozenset(
    {
        "data_dir",
        "lock_dir",
        "digest_filenames",
        "timeout",
        "type",
        "expire",
        "expiretime",
        "starttime",
        "enabled",
        "key_length",
        "regions",
        "cache_regions",
        "log_file",
        "namespace_class",
        "invalidate_corrupt",
        "auto",
        "webtest_varname",
    }
)

# Options Beaker's Session/SessionObject (and pyramid_beaker) consume themselves: they never reach a
# namespace manager, but they sit beside ours in an ini's ``session.*`` settings, which the CLI and the
# Pyramid include read whole.
BEAKER_SESSION_KEYS = frozenset(
    {
        "key",
        "id",
        "secret",
        "validate_key",
        "encrypt_key",
        "encrypt_nonce_bits",
        "crypto_type",
        "cookie_expires",
        "cookie_domain",
        "cookie_path",
        "secure",
        "httponly",
        "samesite",
        "save_accessed_time",
        "data_serializer",
        "cookie_on_exception",
        "constant_csrf_token",
    }
)

_TRUE = frozenset({"true", "yes", "on", "1", "y", "t"})
_FALSE = frozenset({"false", "no", "off", "0", "n", "f", ""})
_ENCRYPT_LEVELS = ("default", "off", "request", "require")
_TDS_VERSIONS = ("7.0", "7.1", "7.2", "7.3", "7.4", "8.0")
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")  # refused in table names, server names and session ids

Callback = Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class TableName:
    """A one- or two-part table name, validated so it can always be bracket-quoted safely."""

    schema: str
    name: str

    @property
    def quoted(self) -> str:
        """``[schema].[name]`` with ``]`` doubled: the only form ever put into SQL text."""
        return f"{quote_identifier(self.schema)}.{quote_identifier(self.name)}"

    def __str__(self) -> str:
        return self.quoted


def quote_identifier(part: str) -> str:
    """Bracket-quote one identifier part (``]`` -> ``]]``)."""
    return "[" + part.replace("]", "]]") + "]"


def _split_table(value: str) -> list[str]:
    """Split ``a.b``, ``[a].[b]``, ``[a.b]`` ... into parts, honouring brackets and ``]]``."""
    parts: list[str] = []
    i, n = 0, len(value)
    while True:
        if i < n and value[i] == "[":
            j = i + 1
            buf = []
            while True:
                if j >= n:
                    raise ValueError("unclosed [")
                if value[j] == "]":
                    if j + 1 < n and value[j + 1] == "]":
                        buf.append("]")
                        j += 2
                        continue
                    break
                buf.append(value[j])
                j += 1
            parts.append("".join(buf))
            i = j + 1
        else:
            j = i
            while j < n and value[j] != ".":
                j += 1
            part = value[i:j]
            if not re.fullmatch(r"[A-Za-z_@#][A-Za-z0-9_@#$]*", part):
                raise ValueError("unquoted names may hold only letters, digits, _, @, # and $")
            parts.append(part)
            i = j
        if i == n:
            return parts
        if value[i] != ".":
            raise ValueError("unexpected text after ]")
        i += 1


def parse_table_name(value: object, key: str = "table") -> TableName:
    """``sessions``, ``dbo.sessions`` or ``[dbo].[sessions]`` -> :class:`TableName`.

    Anything else (three parts, ``a;drop``, ``x]--``, control characters, parts over 128 characters)
    is refused: the name ends up in SQL text, so it must be a name and nothing more.
    """
    if isinstance(value, TableName):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{key} must be a table name like dbo.sessions, got {value!r}")
    text = value.strip()
    try:
        parts = _split_table(text)
    except ValueError as exc:
        raise ConfigurationError(f"{key} = {value!r} is not a valid table name: {exc}") from None
    if len(parts) > 2:
        raise ConfigurationError(
            f"{key} = {value!r} is not a valid table name: use name or schema.name (at most two parts)"
        )
    for part in parts:
        if not 1 <= len(part) <= 128 or CONTROL_CHARS.search(part):
            raise ConfigurationError(
                f"{key} = {value!r} is not a valid table name: each part must be 1-128 characters "
                "without control characters"
            )
    schema, name = (parts[0], parts[1]) if len(parts) == 2 else ("dbo", parts[0])
    return TableName(schema, name)


def _coerce_bool(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ConfigurationError(f"{key} must be a boolean (true/false/yes/no/on/off/1/0), got {value!r}")


def _coerce_int(key: str, value: object, minimum: Optional[int] = None) -> int:
    if isinstance(value, bool):
        raise ConfigurationError(f"{key} must be an integer, got {value!r}")
    try:
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError
            result = int(value)
        elif isinstance(value, (int, str)):
            result = int(value)
        else:
            raise ValueError
    except ValueError:
        raise ConfigurationError(f"{key} must be an integer, got {value!r}") from None
    if minimum is not None and result < minimum:
        raise ConfigurationError(f"{key} must be >= {minimum}, got {value!r}")
    return result


def _coerce_seconds(key: str, value: object, positive: bool = True) -> float:
    if isinstance(value, bool):
        raise ConfigurationError(f"{key} must be a number of seconds, got {value!r}")
    try:
        if not isinstance(value, (int, float, str)):
            raise ValueError
        result = float(value)
    except ValueError:
        raise ConfigurationError(f"{key} must be a number of seconds, got {value!r}") from None
    if result != result or result in (float("inf"), float("-inf")) or (positive and result <= 0):
        raise ConfigurationError(f"{key} must be a positive number of seconds, got {value!r}")
    return result


def _coerce_str(key: str, value: object, *, secret: bool = False) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    shown = MASK if secret else repr(value)
    raise ConfigurationError(f"{key} must be a string, got {shown}")


def resolve_dotted(key: str, value: object) -> Any:
    """Import ``package.module:attr`` or ``package.module.attr``; objects pass through."""
    if not isinstance(value, str):
        return value
    path = value.strip()
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ConfigurationError(f"{key} must be a dotted path like package.module.name, got {value!r}")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"{key} = {value!r} cannot be imported: {exc}") from None
    return obj


def _coerce_callable(key: str, value: object) -> Optional[Callback]:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    obj = resolve_dotted(key, value)
    if not callable(obj):
        raise ConfigurationError(f"{key} must be a callable or a dotted path to one, got {value!r}")
    return obj  # type: ignore[no-any-return]


def _coerce_serializer(value: object) -> Union[str, object]:
    if value is None:
        return "pickle"
    if isinstance(value, str):
        name = value.strip()
        if name in ("pickle", "json"):
            return name
        if "." not in name and ":" not in name:  # a bare word: a misspelt or unsupported format name
            raise ConfigurationError(
                f"serializer must be 'pickle', 'json' or a dotted path to an object with dumps() and "
                f"loads(), got {value!r}"
            )
        obj = resolve_dotted("serializer", name)
    else:
        obj = value
    obj = _instantiate(obj)
    if not (callable(getattr(obj, "dumps", None)) and callable(getattr(obj, "loads", None))):
        raise ConfigurationError(
            f"serializer must be 'pickle', 'json' or an object with dumps() and loads(), got {value!r}"
        )
    return obj


_instances: dict[type, object] = {}


def _instantiate(obj: object) -> object:
    """A class like beaker.util.JsonSerializer means: use an instance of it (one per class, so
    equal options give equal, registry-shareable Settings)."""
    if not isinstance(obj, type):
        return obj
    if obj not in _instances:
        _instances[obj] = obj()
    return _instances[obj]


def _coerce_encrypt(value: object) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() in _ENCRYPT_LEVELS:
        return value.strip().lower()
    try:
        return "require" if _coerce_bool("encrypt", value) else "off"
    except ConfigurationError:
        raise ConfigurationError(
            f"encrypt must be a boolean or one of {', '.join(_ENCRYPT_LEVELS)}, got {value!r}"
        ) from None


# Azure SQL Database and Managed Instance host names (public and sovereign clouds): they require TLS.
AZURE_SQL_HOSTS = (".database.windows.net", ".database.usgovcloudapi.net", ".database.chinacloudapi.cn",
                   ".database.cloudapi.de")


def _default_encrypt(server: str, encrypt: Optional[str]) -> Optional[str]:
    """``require`` for an Azure SQL host unless ``encrypt`` was given; the driver's default otherwise."""
    if encrypt is None and server.split("\\", 1)[0].rstrip(".").lower().endswith(AZURE_SQL_HOSTS):
        return "require"
    return encrypt


@dataclasses.dataclass(frozen=True)
class ConnectionSettings:
    """Everything that identifies one server login; pools are shared per (this, table)."""

    server: str = "localhost"
    port: Optional[int] = None
    user: Optional[str] = None
    password: Optional[str] = dataclasses.field(default=None, repr=False)
    database: str = ""
    encrypt: Optional[str] = None
    trust_server_certificate: bool = False
    ca_file: Optional[str] = None  # PEM file of the CA that signed the server's certificate (pytds)
    login_timeout: int = 15
    query_timeout: int = 30
    appname: str = "beaker-mssql"
    tds_version: Optional[str] = None
    driver: str = "pymssql"
    access_token: Optional[object] = dataclasses.field(default=None, repr=False)  # callable or azure name

    def __repr__(self) -> str:
        password = MASK if self.password is not None else None
        return (
            f"ConnectionSettings(server={self.server!r}, port={self.port!r}, user={self.user!r}, "
            f"password={password!r}, database={self.database!r}, encrypt={self.encrypt!r}, "
            f"trust_server_certificate={self.trust_server_certificate!r}, ca_file={self.ca_file!r}, "
            f"login_timeout={self.login_timeout!r}, query_timeout={self.query_timeout!r}, "
            f"appname={self.appname!r}, tds_version={self.tds_version!r}, driver={self.driver!r})"
        )

    def describe(self) -> str:
        """``user@server:port/database`` for messages (never the password)."""
        where = self.server if self.port is None else f"{self.server}:{self.port}"
        who = f"{self.user}@" if self.user else ""
        return f"{who}{where}/{self.database}"

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``pymssql.connect`` (autocommit: no implicit BEGIN/COMMIT)."""
        server = self.server
        kwargs: dict[str, Any] = {
            "user": self.user,
            "password": self.password,
            "database": self.database,
            "login_timeout": self.login_timeout,
            "timeout": self.query_timeout,
            "appname": self.appname,
            "autocommit": True,
            "charset": "UTF-8",
        }
        if "\\" in server and self.port is not None:
            server = server.split("\\", 1)[0]  # an explicit port beats the instance lookup
        if self.port is not None:
            kwargs["port"] = str(self.port)
        kwargs["server"] = server
        if self.encrypt is not None:
            kwargs["encryption"] = self.encrypt
        if self.tds_version is not None:
            kwargs["tds_version"] = self.tds_version
        return kwargs


@dataclasses.dataclass(frozen=True)
class Settings:
    """Validated options of one store. Frozen and hashable: the registry keys on it."""

    connection: ConnectionSettings = dataclasses.field(default_factory=ConnectionSettings)
    table: TableName = dataclasses.field(default_factory=lambda: TableName("dbo", "sessions"))
    ttl: int = DEFAULT_TTL
    explicit_ttl: Optional[int] = None
    use_utc: bool = True
    serializer: Union[str, object] = "pickle"
    create_table: bool = False
    auto_remove: bool = False
    auto_remove_interval: float = 900.0
    auto_remove_batch_size: int = 1000
    pre_remove_callback: Optional[Callback] = None
    auto_remove_callback: Optional[Callback] = None
    retries: int = 1
    retry_budget: float = 5.0
    touch_interval: int = 60
    idle_timeout: Optional[int] = None
    pool_size: int = 5
    pool_max_overflow: int = 10
    pool_recycle: int = 3600
    pool_timeout: float = 30.0
    on_connect: Optional[Callback] = None
    on_error: Optional[Callback] = None
    on_session_error: Optional[Callback] = None

    @property
    def password(self) -> Optional[str]:
        """The login password, so callers (the CLI) can scrub it from any text they print."""
        return self.connection.password

    @property
    def touch_seconds(self) -> int:
        """How old (by the database clock) a row may get before a read-only request rewrites it.

        ``touch_interval``, capped at half the ttl (so an active session can never expire) and at a
        tenth of Beaker's idle ``timeout`` (the stored ``_accessed_time`` lags by at most this much,
        so Beaker's timeout can fire at most this much early). 0 writes on every access.
        """
        limits = [self.touch_interval, self.ttl // 2]
        if self.idle_timeout is not None:
            limits.append(self.idle_timeout // 10)
        return max(0, min(limits))

    @property
    def pool_key(self) -> tuple[ConnectionSettings, TableName]:
        """One pool per distinct login + table."""
        return (self.connection, self.table)


def parse_url(url: str) -> dict[str, Any]:
    """``mssql://user:password@host[:port][/database][?query]`` -> option dict.

    Parts are percent-decoded; the host may name an instance as ``host\\instance`` (written
    ``host%5Cinstance`` or with a literal backslash). In the query string ``timeout`` is the query
    timeout (pymssql's name); as a separate key that name belongs to Beaker, hence ``query_timeout``.
    """
    if not isinstance(url, str):
        raise ConfigurationError(f"url must be a string like mssql://user:password@host/db, got {url!r}")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("mssql", "mssql+pymssql", "sqlserver"):
        raise ConfigurationError(
            f"url must start with mssql://, got {_mask_url(url)!r}"
        )
    _check_unencoded(rest)
    rest, _, query = rest.partition("?")
    at = rest.rfind("@")
    userinfo, hostpart = (rest[:at], rest[at + 1 :]) if at >= 0 else ("", rest)
    hostport, _, path = hostpart.partition("/")
    options: dict[str, Any] = {}
    if userinfo:
        user, has_pw, password = userinfo.partition(":")
        options["user"] = unquote(user)
        if has_pw:
            options["password"] = unquote(password)
    host, port = hostport, ""
    if hostport.startswith("["):  # [ipv6]:port
        close = hostport.find("]")
        host, port = hostport[1:close], hostport[close + 2 :]
    elif ":" in hostport:
        host, port = hostport.rsplit(":", 1)
    if host:
        options["server"] = unquote(host)
    if port:
        options["port"] = port
    database = unquote(path.strip("/"))
    if database:
        options["database"] = database
    for name, value in parse_qsl(query, keep_blank_values=True):
        name = name.strip().lower()
        if name == "timeout":
            name = "query_timeout"
        if name not in _URL_QUERY_KEYS:
            supported = ", ".join(sorted(_URL_QUERY_KEYS))
            if "@" in name + value:  # a "?" left unencoded in the password: this is part of it
                raise ConfigurationError(
                    f"url has a '?' before its '@': percent-encode '?' in the password as %3F "
                    f"(query parameters: {supported})"
                )
            # The value is not shown either: it may hold a secret.
            raise ConfigurationError(f"url query parameter {name!r} is not supported; use one of {supported}")
        options[name] = value
    return options


def _check_unencoded(rest: str) -> None:
    """Refuse a ``#`` or a second ``@`` after ``scheme://``: an unencoded character of the password.

    ``#`` starts a URL fragment, so ``sa:p@ss#word@host`` would silently become user ``sa`` on host
    ``ss``; two ``@`` leave the reader guessing where the credentials end. The message names the
    character and its escape, never the password.
    """
    if "#" in rest:
        raise ConfigurationError(
            "url holds an unencoded '#': in a password percent-encode it as %23 "
            "(a mssql:// URL has no #fragment)"
        )
    if rest.partition("?")[0].count("@") > 1:
        raise ConfigurationError(
            "url holds more than one unencoded '@': in the user name or password percent-encode "
            "'@' as %40 (the credentials end at the single '@' before the host)"
        )


_URL_QUERY_KEYS = frozenset(
    {"encrypt", "trust_server_certificate", "ca_file", "login_timeout", "query_timeout", "appname",
     "tds_version", "driver"}
)
# The driver when none is given. The test suite sets it (tests/conftest.py) to run everything with pytds.
DEFAULT_DRIVER = "pymssql"
_CONNECTION_KEYS = frozenset(
    {"server", "host", "port", "user", "password", "database", "access_token"} | _URL_QUERY_KEYS
)
_STORE_KEYS = frozenset(
    {
        "url",
        "table",
        "ttl",
        "use_utc",
        "serializer",
        "create_table",
        "auto_remove",
        "auto_remove_interval",
        "auto_remove_batch_size",
        "pre_remove_callback",
        "auto_remove_callback",
        "retries",
        "retry_budget",
        "touch_interval",
        "pool_size",
        "pool_max_overflow",
        "pool_recycle",
        "pool_timeout",
        "on_connect",
        "on_error",
        "on_session_error",
    }
)
KNOWN_KEYS = _CONNECTION_KEYS | _STORE_KEYS


def _mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``.

    Like :func:`parse_url` it takes the *last* ``@`` as the end of the credentials (so an unencoded
    ``@`` in the password is masked too), and it also masks ``user:password@host`` without a scheme.
    """
    start = url.find("://")
    start = 0 if start < 0 else start + 3
    at = url.rfind("@")
    colon = url.find(":", start, at) if at > start else -1
    if colon < 0:
        return url
    return url[: colon + 1] + MASK + url[at:]


def _build_connection(options: Mapping[str, Any]) -> ConnectionSettings:
    merged: dict[str, Any] = {}
    if options.get("url") is not None:
        merged.update(parse_url(options["url"]))
    # Separate keys refine (override) what the URL said.
    for key in _CONNECTION_KEYS:
        if options.get(key) is not None:
            merged["server" if key == "host" else key] = options[key]

    server = _coerce_str("server", merged.get("server", "localhost")).strip() or "localhost"
    if CONTROL_CHARS.search(server):
        raise ConfigurationError(f"server must not contain control characters, got {server!r}")
    port = merged.get("port")
    port_value = None if port in (None, "") else _coerce_int("port", port, minimum=1)
    if port_value is not None and port_value > 65535:
        raise ConfigurationError(f"port must be 1-65535, got {port!r}")
    user = merged.get("user")
    password = merged.get("password")
    tds = merged.get("tds_version")
    tds_value = None if tds in (None, "") else _coerce_str("tds_version", tds).strip()
    if tds_value is not None and tds_value not in _TDS_VERSIONS:
        raise ConfigurationError(f"tds_version must be one of {', '.join(_TDS_VERSIONS)}, got {tds!r}")
    driver = _coerce_str("driver", merged.get("driver") or DEFAULT_DRIVER).strip().lower()
    if driver not in ("pymssql", "pytds"):
        raise ConfigurationError(f"driver must be 'pymssql' or 'pytds', got {merged.get('driver')!r}")
    access_token = _coerce_access_token(merged.get("access_token"))
    if access_token is not None and driver != "pytds":
        raise ConfigurationError("access_token (Microsoft Entra ID) needs driver = pytds: pymssql cannot "
                                 "send an access token (pymssql issue #915)")
    ca_file = _coerce_ca_file(merged.get("ca_file"), driver)
    encrypt = _default_encrypt(server, _coerce_encrypt(merged.get("encrypt")))
    if ca_file is not None and encrypt == "off":
        raise ConfigurationError(
            f"ca_file = {ca_file!r} verifies an encrypted connection, but encrypt is off")
    if access_token is not None and (user or password):
        raise ConfigurationError("access_token replaces user and password: give one or the other, not both")
    return ConnectionSettings(
        driver=driver,
        access_token=access_token,
        server=server,
        port=port_value,
        user=None if user is None else _coerce_str("user", user),
        password=None if password is None else _coerce_str("password", password, secret=True),
        database=_coerce_str("database", merged.get("database", "")),
        encrypt=encrypt,
        ca_file=ca_file,
        trust_server_certificate=_coerce_bool(
            "trust_server_certificate", merged.get("trust_server_certificate", False)
        ),
        login_timeout=_coerce_int("login_timeout", merged.get("login_timeout", 15), minimum=1),
        query_timeout=_coerce_int("query_timeout", merged.get("query_timeout", 30), minimum=0),
        appname=_coerce_str("appname", merged.get("appname", "beaker-mssql")),
        tds_version=tds_value,
    )


def _coerce_ca_file(value: object, driver: str) -> Optional[str]:
    """An existing, readable PEM file; only python-tds takes one per connection."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    path = os.path.expanduser(_coerce_str("ca_file", value).strip())
    if driver != "pytds":
        raise ConfigurationError(
            f"ca_file = {value!r} needs driver = pytds: pymssql verifies certificates through FreeTDS, "
            "whose CA file is the 'ca file' setting in freetds.conf")
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise ConfigurationError(f"ca_file = {value!r} is not a readable file")
    return path


def _coerce_access_token(value: object) -> Optional[object]:
    """A callable returning a token, a dotted path to one, or 'azure-default' / 'managed-identity'."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str) and value.strip().lower() in ("azure-default", "managed-identity"):
        return value.strip().lower()
    return _coerce_callable("access_token", value)


def unknown_option_message(key: str, prefix: str = "") -> str:
    """``ignoring unknown option 'session.tll': did you mean 'session.ttl'?`` (the ini spelling
    when ``prefix`` is known, e.g. ``session.`` or ``cache.short_term.``)."""
    guess = closest(key, KNOWN_KEYS)
    known = ", ".join(sorted(KNOWN_KEYS))
    hint = f"; did you mean {prefix + guess!r}?" if guess else f"; known options: {known}"
    where = "" if prefix else " (session.* or cache.<region>.* setting)"
    return f"ignoring unknown option {prefix + key!r}{where}{hint}"


def parse_settings(options: Mapping[str, Any], prefix: str = "") -> Settings:
    """Validate and coerce ``options`` (strings welcome) into :class:`Settings`.

    ``prefix`` (``session.``, ``cache.<region>.``) is how the options are spelt where they came from,
    so a warning about an unknown one names the key the user actually wrote.
    """
    if isinstance(options, Settings):
        return options
    for key in options:
        if key not in KNOWN_KEYS and key not in BEAKER_KEYS:
            logger.warning("beaker_mssql: %s", unknown_option_message(str(key), prefix))

    def get(key: str, default: Any) -> Any:
        value = options.get(key)
        return default if value is None else value

    explicit_ttl = None
    if options.get("ttl") not in (None, ""):
        explicit_ttl = _coerce_int("ttl", options["ttl"], minimum=1)
    ttl = explicit_ttl
    idle_timeout = None
    if options.get("timeout") not in (None, ""):
        forwarded = _coerce_int("timeout", options["timeout"], minimum=1)
        # Beaker forwards its idle timeout + 120 s (beaker.session.Session.__init__).
        idle_timeout = forwarded - 120 if forwarded > 120 else forwarded
        if ttl is None:
            ttl = forwarded
    recycle = _coerce_int("pool_recycle", get("pool_recycle", 3600), minimum=-1)
    if recycle == 0:
        raise ConfigurationError("pool_recycle must be a positive number of seconds or -1 (off), got 0")

    return Settings(
        connection=_build_connection(options),
        table=parse_table_name(get("table", "[dbo].[sessions]")),
        ttl=DEFAULT_TTL if ttl is None else ttl,
        explicit_ttl=explicit_ttl,
        use_utc=_coerce_bool("use_utc", get("use_utc", True)),
        serializer=_coerce_serializer(options.get("serializer")),
        create_table=_coerce_bool("create_table", get("create_table", False)),
        auto_remove=_coerce_bool("auto_remove", get("auto_remove", False)),
        auto_remove_interval=_coerce_seconds("auto_remove_interval", get("auto_remove_interval", 900)),
        auto_remove_batch_size=_coerce_int(
            "auto_remove_batch_size", get("auto_remove_batch_size", 1000), minimum=1
        ),
        pre_remove_callback=_coerce_callable("pre_remove_callback", options.get("pre_remove_callback")),
        auto_remove_callback=_coerce_callable("auto_remove_callback", options.get("auto_remove_callback")),
        retries=_coerce_int("retries", get("retries", 1), minimum=0),
        retry_budget=_coerce_seconds("retry_budget", get("retry_budget", 5)),
        touch_interval=_coerce_int("touch_interval", get("touch_interval", 60), minimum=0),
        idle_timeout=idle_timeout,
        pool_size=_coerce_int("pool_size", get("pool_size", 5), minimum=1),
        pool_max_overflow=_coerce_int("pool_max_overflow", get("pool_max_overflow", 10), minimum=0),
        pool_recycle=recycle,
        pool_timeout=_coerce_seconds("pool_timeout", get("pool_timeout", 30)),
        on_connect=_coerce_callable("on_connect", options.get("on_connect")),
        on_error=_coerce_callable("on_error", options.get("on_error")),
        on_session_error=_coerce_callable("on_session_error", options.get("on_session_error")),
    )
