"""Pyramid glue: check the ``session.*`` / ``cache.*`` settings at startup, not at the first request.

pyramid_beaker alone already works with ``session.type = ext:mssql``; this include adds what it
cannot know about:

* a typo such as ``session.ttl = 1h`` or a missing ``session.url`` fails ``pserve`` at startup with
  a :class:`~beaker_mssql.config.ConfigurationError` naming the ini key, instead of a 500 on the
  first request that touches the session;
* ``session.create_table = true`` creates the table (idempotently) when the configuration is
  committed, so a fresh database works without a separate deploy step;
* one log line says which server and table sessions go to (password masked);
* a ``session.ttl`` shorter than ``session.timeout`` is logged as a warning: rows would expire
  while Beaker still considers the session valid, logging users out early;
* a missing ``session.secret`` is logged as a warning: unsigned cookies let a client choose the
  session id it presents.

Use both includes, in this order::

    pyramid.includes =
        pyramid_beaker
        beaker_mssql.integrations.pyramid
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

from beaker_mssql.config import BEAKER_KEYS, BEAKER_SESSION_KEYS, ConfigurationError, Settings, parse_settings
from beaker_mssql.events import masked_logger

__all__ = [
    "BACKEND",
    "SESSION_SETTINGS_KEY",
    "cache_region_options",
    "includeme",
    "session_options",
    "validate_settings",
]

logger = masked_logger("beaker_mssql.integrations.pyramid")

BACKEND = "ext:mssql"
SESSION_SETTINGS_KEY = "beaker_mssql.session_settings"
CACHE_SETTINGS_KEY = "beaker_mssql.cache_settings"



def _strip(settings: Mapping[str, Any], prefixes: tuple[str, ...]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key, value in settings.items():
        for prefix in prefixes:
            if key.startswith(prefix):
                options[key[len(prefix) :]] = value.strip() if isinstance(value, str) else value
                break
    return options


def session_options(settings: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    """The options Beaker will hand the ``ext:mssql`` session backend, or None for another type.

    Like pyramid_beaker: ``session.*`` and ``beaker.session.*`` with the prefix stripped. Beaker
    forwards ``timeout`` (+ 120 s) to the backend as the default ttl; it is kept as given so the
    store's fallback can be checked.
    """
    options = _strip(settings, ("beaker.session.", "session."))
    if options.get("type") != BACKEND:
        return None
    return {k: v for k, v in options.items() if k not in BEAKER_SESSION_KEYS}


def cache_region_options(settings: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per cache region, the options the ``ext:mssql`` cache backend will receive.

    Mirrors pyramid_beaker: a region gets ``cache.type`` and ``cache.url`` plus its own
    ``cache.<region>.*`` keys (which win). Regions of another type are left out.
    """
    cache = _strip(settings, ("beaker.cache.", "cache."))
    regions_text = cache.get("regions") or ""
    regions = [r.strip() for r in str(regions_text).replace(",", " ").split() if r.strip()]
    result: dict[str, dict[str, Any]] = {}
    for region in regions:
        options: dict[str, Any] = {"type": cache.get("type"), "url": cache.get("url")}
        prefix = f"{region}."
        for key, value in cache.items():
            if key.startswith(prefix):
                options[key[len(prefix) :]] = value
        if options.get("type") == BACKEND:
            result[region] = {k: v for k, v in options.items() if v is not None}
    return result


def _parse(options: Mapping[str, Any], where: str) -> Settings:
    """parse_settings with a message that names the ini spelling of the bad key."""
    if not options.get("url") and not options.get("server"):
        raise ConfigurationError(
            f"{where}url is required with {where}type = {BACKEND} "
            f"(e.g. {where}url = mssql://user:password@host:1433/database)"
        )
    relevant = {k: v for k, v in options.items() if k not in BEAKER_KEYS or k == "timeout"}
    try:
        return parse_settings(relevant, prefix=where)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}*: {exc}") from None


def validate_settings(settings: Mapping[str, Any]) -> tuple[Optional[Settings], dict[str, Settings]]:
    """Parse the session and every ext:mssql cache region; raise ConfigurationError on the first bad one."""
    session: Optional[Settings] = None
    options = session_options(settings)
    if options is not None:
        session = _parse(options, "session.")
        beaker_options = _strip(settings, ("beaker.session.", "session."))
        if not beaker_options.get("secret"):
            logger.warning(
                "session.secret is not set: session cookies are unsigned, so a client can present any "
                "session id it likes; set a long random secret"
            )
        timeout = options.get("timeout")
        if session.explicit_ttl is not None and timeout not in (None, ""):
            try:
                beaker_timeout = int(str(timeout))
            except ValueError:
                beaker_timeout = None
            if beaker_timeout is not None and session.explicit_ttl < beaker_timeout:
                logger.warning(
                    "session.ttl = %s is shorter than session.timeout = %s: rows expire while "
                    "Beaker still treats the session as valid (users are logged out early)",
                    session.explicit_ttl,
                    beaker_timeout,
                )
    caches = {
        region: _parse(region_options, f"cache.{region}.")
        for region, region_options in cache_region_options(settings).items()
    }
    if session is not None or caches:
        _check_backend_registered()
    return session, caches


def _check_backend_registered() -> None:
    """Beaker finds ext:mssql through the beaker.backends entry point: fail clearly if it is missing."""
    from beaker.cache import clsmap

    try:
        clsmap[BACKEND]
    except KeyError:
        raise ConfigurationError(
            f"Beaker does not know the session type {BACKEND!r}: the beaker.backends entry point of "
            "beaker-mssql is missing (reinstall the package: pip install beaker-mssql)"
        ) from None


def _describe(settings: Settings) -> str:
    conn = settings.connection
    who = f"{conn.user}@" if conn.user else ""
    port = "" if conn.port is None else f":{conn.port}"
    return f"mssql://{who}{conn.server}{port}/{conn.database}"


def includeme(config: Any) -> None:
    """``config.include('beaker_mssql.integrations.pyramid')``: validate, log, maybe create tables."""
    settings = config.get_settings()
    session, caches = validate_settings(settings)
    config.registry[SESSION_SETTINGS_KEY] = session
    config.registry[CACHE_SETTINGS_KEY] = caches
    if session is not None:
        logger.info("beaker-mssql: sessions in %s on %s", session.table.quoted, _describe(session))
    for region, region_settings in caches.items():
        logger.info(
            "beaker-mssql: cache region %r in %s on %s",
            region,
            region_settings.table.quoted,
            _describe(region_settings),
        )

    wanted: list[tuple[str, Settings]] = []
    if session is not None and session.create_table:
        wanted.append(("session.", session))
    wanted.extend((f"cache.{region}.", item) for region, item in caches.items() if item.create_table)
    if wanted:
        _create_tables(wanted)


def _create_tables(wanted: list[tuple[str, Settings]]) -> None:
    """CREATE TABLE for ``create_table = true``, now, while pserve starts.

    Run here rather than as a deferred Pyramid action: a failure then surfaces as one
    :class:`ConfigurationError` naming the ini keys to check (not Pyramid's wrapped
    ``ConfigurationExecutionError`` with the whole driver text and a "Line 0 of file None").
    """
    from beaker_mssql.errors import MSSQLStoreError
    from beaker_mssql.store import MSSQLStore

    done: set[Any] = set()
    for where, item in wanted:
        if item.pool_key in done:
            continue
        done.add(item.pool_key)
        store = MSSQLStore.from_settings(item)
        try:
            store.create_table()
        except MSSQLStoreError as exc:
            url_key = "cache.url" if where.startswith("cache.") else f"{where}url"
            raise ConfigurationError(
                f"{where}create_table = true, but creating {item.table.quoted} at startup failed: {exc} "
                f"(check {url_key} and {where}table, or set {where}create_table = false and create "
                "the table with `beaker-mssql create-table`)"
            ) from None
        finally:
            store.close()
        logger.info("beaker-mssql: table %s is ready", item.table.quoted)
