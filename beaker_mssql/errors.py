"""The exceptions beaker-mssql raises.

Every error derives from :class:`MSSQLStoreError`, so an application can catch the whole family in
one ``except``. Some also derive from a built-in exception where that is what the error *is*
(a bad option value is a ``ValueError``), so generic code keeps working. No message ever
contains a password: errors are built from :class:`~beaker_mssql.config.Settings`, whose
representation masks it.
"""

from __future__ import annotations

from typing import Optional


class MSSQLStoreError(Exception):
    """Base class of every error raised by beaker-mssql."""


class ConfigurationError(MSSQLStoreError, ValueError):
    """An option is missing, unknown or has a value that cannot be used.

    The message names the option and the offending value (a password is shown as ``***``).
    """


class InvalidSessionId(MSSQLStoreError, ValueError):
    """A session id (or cache row id) cannot be stored safely.

    Raised before anything is sent to the server: ids must be 1..255 characters, without
    control characters and without trailing spaces (the default case-insensitive collation
    ignores trailing spaces, so ``'abc '`` would find the row of ``'abc'``).
    """


class CorruptSessionError(MSSQLStoreError, ValueError):
    """A stored row cannot be decoded.

    It is a ``ValueError`` (not a ``KeyError``/``TypeError``, which Beaker treats as "no
    session"), so Beaker's ``invalidate_corrupt = true`` replaces the session with a fresh one
    and, without that option, the application sees this error instead of silently losing data.
    """


class InvalidCacheKey(MSSQLStoreError, TypeError):
    """A cache key of a type that has no row form (a list, an arbitrary object) or NaN.

    Keys map to rows the way Beaker's memory backend tells dict keys apart, which needs a stable
    text for every value: str, bytes, numbers, None, dates, UUIDs and tuples/frozensets of those.
    """


class SerializationError(MSSQLStoreError, ValueError):
    """A cache value cannot be encoded with the configured serializer; nothing was written."""


class SidCaseConflictError(MSSQLStoreError):
    """A row exists whose id differs from the one being saved only by letter case.

    The table's default collation is case-insensitive, so the two ids collide on the primary
    key. Overwriting would hand one user's session to another, so the save is refused.
    """


class TableMissingError(MSSQLStoreError):
    """The sessions table does not exist (SQL Server error 208) and ``create_table`` is off."""


class PoolTimeoutError(MSSQLStoreError):
    """No pooled connection became free within ``pool_timeout`` seconds."""


class LockNotGrantedError(MSSQLStoreError):
    """``sp_getapplock`` did not grant a lock (timeout, deadlock or cancellation)."""


class DatabaseError(MSSQLStoreError):
    """The server or the driver reported an error while running a store method.

    ``number`` is the SQL Server / DB-Library error number when one is known (e.g. 1205 for a
    deadlock, 20009 for "unable to connect"), ``method`` the store method that failed.
    """

    def __init__(self, message: str, number: Optional[int] = None, method: Optional[str] = None) -> None:
        super().__init__(message)
        self.number = number
        self.method = method


class ConnectionFailedError(DatabaseError):
    """A connection could not be opened, or broke while in use (it has been discarded)."""


class SaveConflictError(DatabaseError):
    """A session save could not be completed without overwriting another request's later write.

    Raised when concurrent writers kept changing the row for every merge round, or when the outcome
    of a save is unknown (the connection broke mid-save) and the row has changed in a way this
    request cannot reconcile (encrypted data). Nothing was overwritten.
    """


class WriteOutcomeUnknownError(ConnectionFailedError):
    """The connection broke while a write was in flight and the row does not show whether it
    committed. The write was not sent again: re-sending could overwrite a later write by someone else."""


class UncachedValueWarning(UserWarning):
    """A value computed by ``get(createfunc=...)`` could not be encoded, so it was returned uncached.

    Losing a computed value to a serializer limit (``serializer = json`` and a ``datetime``, a ``set``,
    NaN) would turn a cache into an outage; the next ``get`` computes it again. ``put`` still raises
    :class:`SerializationError`.
    """


#: Babelfish's fixed number for an error it does not map to a SQL Server number
#: (https://docs.aws.amazon.com/AmazonRDS/latest/AuroraUserGuide/babelfish-strict.html).
BABELFISH_UNMAPPED = 33557097

ALREADY_EXISTS = frozenset({2714, 1913})  # an object / an index of that name exists


def sqlserver_equivalent(number: Optional[int], message: str, login: bool = False) -> Optional[int]:
    """The SQL Server error number that an error from any supported engine stands for.

    One place for the engines' differences (measured on Babelfish 4.3, issue 9): Babelfish reports a
    missing table as 33557097 ``relation "..." does not exist`` (SQL Server: 208), too long a value as
    33557097 ``value too long for type ...`` (2628), an object that exists as 33557097 ``... already
    exists`` where it does not map it to 2714, and an unknown database at login as 911 (4060).
    """
    if number == BABELFISH_UNMAPPED:
        text = message.lower()
        if "relation " in text and "does not exist" in text:
            return 208
        if "value too long for type" in text:
            return 2628
        if "already exists" in text:
            return 2714
        return number
    if number == 911 and login:
        return 4060
    return number


def server_message(exc: BaseException) -> str:
    """The server's message text of a driver exception, without pymssql's DB-Lib trailer.

    pymssql raises ``Error(number, b"text DB-Lib error message 20018, ...")``: the text is the
    second argument, which a message built from the first alone loses ("error 2714: 2714").
    """
    for arg in exc.args:
        if isinstance(arg, tuple) and len(arg) > 1:
            arg = arg[1]
        if isinstance(arg, bytes):
            arg = arg.decode("utf-8", "replace")
        if isinstance(arg, str) and arg.strip():
            text = arg.split("DB-Lib error message")[0]
            return " ".join(text.split()) or " ".join(arg.split())
    if exc.args:  # no text at all: the number, as the driver gave it
        first = exc.args[0]
        return str(first[0] if isinstance(first, tuple) and first else first)
    return type(exc).__name__
