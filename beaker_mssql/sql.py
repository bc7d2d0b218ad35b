"""Every statement beaker-mssql sends, in one place.

Identifiers are the only thing formatted into the text, always bracket-quoted by
:class:`~beaker_mssql.config.TableName`; values are always pymssql parameters (``%(name)s``), which
pymssql interpolates client-side as properly escaped literals (``N'O''Brien'``). Statements are
built once per (table, use_utc) by :func:`statements_for` and cached.

Why the ``[sid] = %(sid)s AND [sid] = %(sid)s COLLATE Latin1_General_BIN2`` pair: the first
predicate can seek the primary key under the table's default (case-insensitive) collation, the
second makes the match exact. Without it a cookie ``ABC...`` would load the session ``abc...``.

How a session is saved (see README "How saving works"): a session row is read together with its
*version*, ``HASHBYTES('SHA2_256', [session])``, computed by the server (so the text's encoding on
the wire or on disk never matters), and its remaining lifetime by the database clock. The save is a
single conditional statement, ``UPDATE ... WHERE <exact sid> AND HASHBYTES(...) = <loaded version>``:
it writes only if the row is still what the request loaded, and otherwise changes nothing. A row
that did not exist at load is created by ``save_insert``, which revives a dead (expired, unswept) row
or inserts; a concurrent creator makes it fail with 2627. Correctness rests on single-statement
atomicity and the primary key only, so it holds without table hints (which Babelfish ignores),
under RCSI (Azure SQL: an UPDATE checks its predicate against the latest committed row), on
memory-optimized tables (which refuse ``UPDLOCK``), and with no ``MERGE`` (Babelfish has none).

No statement changes a session option (``SET NOCOUNT``, ``SET XACT_ABORT``...) or opens a
transaction it might leave open: a pooled connection leaves every statement as it came in,
whatever happened to the statement. The one exception is the create-table DDL, which needs
``XACT_ABORT`` for its transaction: a SET in a batch outlives the batch, so the store reads the
option first (``XACT_ABORT_STATE``) and turns it back off afterwards (``XACT_ABORT_OFF``), whether the
DDL succeeded or failed.

The cache upsert (``set``) is ``UPDATE; IF @@ROWCOUNT = 0 INSERT``: a concurrent insert of the same
key makes it fail with 2627 and the store runs it again (it then updates). A 2627 on the second run
means a row whose sid differs only by letter case exists (the BIN2 update finds nothing, the
case-insensitive key collides): :class:`~beaker_mssql.errors.SidCaseConflictError`, never an
overwrite of that row.

Expiry is ``DATEADD(second, %(ttl)s, NOW)`` where NOW is ``GETUTCDATE()`` (``use_utc``, the default)
or ``GETDATE()``; ``datetime`` keeps no time zone, so readers and writers must agree on one. A cache
value without an expiry time gets ``NO_EXPIRY_SECONDS`` (the largest ``int`` DATEADD takes, about
68 years): one statement shape for everything, and the sweeper needs no special case.
"""

# Identifiers are validated and bracket-quoted (config.TableName); values are always parameters.
# ruff: noqa: S608

from __future__ import annotations

import dataclasses
import functools
import hashlib

from beaker_mssql.config import TableName, quote_identifier

__all__ = [
    "NO_EXPIRY_SECONDS",
    "Statements",
    "applock_resource",
    "create_table_sql",
    "drop_table_sql",
    "escape_like",
    "statements_for",
]

NO_EXPIRY_SECONDS = 2_147_483_647
# A row's version: computed by the server from the stored text (Babelfish has sys.hashbytes too).
VERSION = "HASHBYTES('SHA2_256', [session])"

APPLOCK_SQL = (
    "DECLARE @result int;\n"
    "EXEC @result = sp_getapplock @Resource = %(resource)s, @LockMode = N'Exclusive', "
    "@LockOwner = N'Session', @LockTimeout = %(timeout_ms)s;\n"
    "SELECT @result AS [result];"
)
APPUNLOCK_SQL = (
    "DECLARE @result int; "
    "EXEC @result = sp_releaseapplock @Resource = %(resource)s, @LockOwner = N'Session'; "
    "SELECT @result AS [result];"
)


# create_table's bracket around its DDL (see the module docstring): XACT_ABORT is bit 16384 of @@OPTIONS
# (https://learn.microsoft.com/sql/t-sql/functions/options-transact-sql).
XACT_ABORT_STATE = "SELECT CAST(@@OPTIONS & 16384 AS int)"
XACT_ABORT_OFF = "SET XACT_ABORT OFF"


def escape_like(text: str) -> str:
    r"""Escape ``\``, ``%``, ``_`` and ``[`` for ``LIKE ... ESCAPE '\'``."""
    return (
        text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace("[", "\\[")
    )


@dataclasses.dataclass(frozen=True)
class Statements:
    """The statements for one table and clock. Parameters are named in each docstring line."""

    table: TableName
    use_utc: bool
    now: str
    get: str  # sid -> session, version, seconds left
    set: str  # sid, data, ttl (unconditional upsert: caches, MSSQLStore.set)
    save_update: str  # sid, data, ttl, version (conditional: only if the row is unchanged)
    save_insert: str  # sid, data (sent once), ttl (create, or revive an expired row; 2627 if live)
    touch: str  # sid, ttl
    destroy: str  # sid
    length: str
    all: str
    clear: str  # batch
    destroy_expired: str  # batch
    delete_prefix: str  # pattern, batch
    keys_prefix: str  # pattern
    count_expired: str
    table_stats: str
    server_time: str
    columns: str  # schema, name
    indexes: str  # object
    getapplock: str  # resource, timeout_ms
    releaseapplock: str  # resource
    # -- operator diagnostics (the CLI) --
    database_name: str  # the database the login actually landed in (a URL may name none)
    table_shapes: str  # every base table with how many of sid/session/expires it has


@functools.cache
def statements_for(table: TableName, use_utc: bool = True) -> Statements:
    """Build (once) every statement for ``table`` with NOW = GETUTCDATE() or GETDATE()."""
    t = table.quoted
    now = "GETUTCDATE()" if use_utc else "GETDATE()"
    exact = "[sid] = %(sid)s AND [sid] = %(sid)s COLLATE Latin1_General_BIN2"
    expires = f"DATEADD(second, %(ttl)s, {now})"
    return Statements(
        table=table,
        use_utc=use_utc,
        now=now,
        get=(
            f"SELECT [session], {VERSION}, DATEDIFF(second, {now}, [expires]) "
            f"FROM {t} WHERE {exact} AND [expires] > {now}"
        ),
        set=(
            f"UPDATE {t} SET [session] = %(data)s, [expires] = {expires} WHERE {exact};\n"
            "IF @@ROWCOUNT = 0\n"
            f"    INSERT INTO {t} ([sid], [session], [expires]) VALUES (%(sid)s, %(data)s, {expires});"
        ),
        save_update=(
            f"UPDATE {t} SET [session] = %(data)s, [expires] = {expires} "
            f"WHERE {exact} AND {VERSION} = %(version)s"
        ),
        # The data once, in a variable: pymssql writes parameters into the text on the client, so a
        # second %(data)s would escape, send and parse a large session twice. DECLARE with an
        # initial value: SQL Server 2008+, Azure SQL, Babelfish (learn.microsoft.com/en-us/sql/
        # t-sql/language-elements/declare-local-variable-transact-sql).
        save_insert=(
            "DECLARE @data nvarchar(max) = %(data)s;\n"
            f"UPDATE {t} SET [session] = @data, [expires] = {expires}\n"
            f"  WHERE {exact} AND [expires] <= {now};\n"
            "IF @@ROWCOUNT = 0\n"
            f"    INSERT INTO {t} ([sid], [session], [expires]) VALUES (%(sid)s, @data, {expires});"
        ),
        touch=f"UPDATE {t} SET [expires] = {expires} WHERE {exact} AND [expires] > {now}",
        destroy=f"DELETE FROM {t} WHERE {exact}",
        length=f"SELECT COUNT(*) FROM {t} WHERE [expires] > {now}",
        all=f"SELECT [sid], [session], [expires] FROM {t} WHERE [expires] > {now} ORDER BY [sid]",
        clear=f"DELETE TOP (%(batch)s) FROM {t}",
        destroy_expired=f"DELETE TOP (%(batch)s) FROM {t} WHERE [expires] <= {now}",
        delete_prefix=f"DELETE TOP (%(batch)s) FROM {t} WHERE [sid] LIKE %(pattern)s ESCAPE N'\\'",
        keys_prefix=f"SELECT [sid] FROM {t} WHERE [sid] LIKE %(pattern)s ESCAPE N'\\' AND [expires] > {now}",
        count_expired=f"SELECT COUNT(*) FROM {t} WHERE [expires] <= {now}",
        table_stats=(
            f"SELECT MIN([expires]), MAX([expires]), SUM(CAST(DATALENGTH([session]) AS bigint)) FROM {t}"
        ),
        server_time=f"SELECT {now}",
        columns=(
            "SELECT COLUMN_NAME, DATA_TYPE, CHARACTER_MAXIMUM_LENGTH, IS_NULLABLE "
            "FROM INFORMATION_SCHEMA.COLUMNS "
            "WHERE TABLE_SCHEMA = %(schema)s AND TABLE_NAME = %(name)s ORDER BY ORDINAL_POSITION"
        ),
        # By column (the same rule as create_table_sql): Babelfish shows index names rewritten.
        indexes=(
            "SELECT i.name, i.is_primary_key, i.is_unique, ic.key_ordinal, c.name AS column_name "
            "FROM sys.indexes AS i JOIN sys.index_columns AS ic "
            "ON ic.object_id = i.object_id AND ic.index_id = i.index_id "
            "JOIN sys.columns AS c ON c.object_id = ic.object_id AND c.column_id = ic.column_id "
            "WHERE i.object_id = OBJECT_ID(%(object)s) ORDER BY i.name, ic.key_ordinal"
        ),
        getapplock=APPLOCK_SQL,
        releaseapplock=APPUNLOCK_SQL,
        database_name="SELECT DB_NAME()",
        table_shapes=(
            "SELECT c.TABLE_SCHEMA, c.TABLE_NAME, "
            "SUM(CASE WHEN c.COLUMN_NAME IN (N'sid', N'session', N'expires') THEN 1 ELSE 0 END) "
            "FROM INFORMATION_SCHEMA.COLUMNS AS c JOIN INFORMATION_SCHEMA.TABLES AS t "
            "ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME "
            "WHERE t.TABLE_TYPE = N'BASE TABLE' "
            "GROUP BY c.TABLE_SCHEMA, c.TABLE_NAME ORDER BY c.TABLE_SCHEMA, c.TABLE_NAME"
        ),
    )


def _n_literal(text: str) -> str:
    """An N'...' literal for DDL text (which cannot take parameters in CLI dry runs)."""
    return "N'" + text.replace("'", "''") + "'"


def index_name(table: TableName) -> str:
    """``IX_<table>_expires``, trimmed to the 128-character identifier limit."""
    return ("IX_" + table.name)[:116] + "_expires"


#: sp_getapplock keeps 255 characters of @Resource on SQL Server and 255 UTF-8 bytes on Babelfish
#: (docs/engines.md); a name within 255 bytes means the same lock on every engine.
APPLOCK_RESOURCE_BYTES = 255


def applock_resource(name: str) -> str:
    """``name`` as an sp_getapplock @Resource that no engine truncates.

    A longer name becomes its first 180 bytes, ``~`` and the SHA-256 of the whole name, so two long
    names never share a lock because the engine cut them to the same prefix.
    """
    raw = name.encode("utf-8")
    if len(raw) <= APPLOCK_RESOURCE_BYTES:
        return name
    prefix = raw[:180].decode("utf-8", errors="ignore")  # never half a character
    return prefix + "~" + hashlib.sha256(raw).hexdigest()


def create_lock_resource(table: TableName) -> str:
    """The app lock that serialises create_table DDL on one table (at most 255 UTF-8 bytes)."""
    return applock_resource(f"beaker_mssql:create_table:{table.quoted}")


def expires_index_exists_sql(obj: str) -> str:
    """A predicate: ``obj`` has an index whose first key column is ``expires``.

    By column, not by name: Babelfish shows index names rewritten (``ix_t_expirest<md5>``) and its
    INDEXPROPERTY finds none, and a connect-mssql-v2 user may have created the index under a name of
    their own. The join works on SQL Server, Azure SQL and Babelfish.
    """
    return (
        "EXISTS (SELECT 1 FROM sys.indexes AS i\n"
        "    JOIN sys.index_columns AS ic ON ic.object_id = i.object_id AND ic.index_id = i.index_id\n"
        "    JOIN sys.columns AS c ON c.object_id = ic.object_id AND c.column_id = ic.column_id\n"
        f"    WHERE i.object_id = OBJECT_ID({obj}) AND ic.key_ordinal = 1 AND c.name = N'expires')"
    )


def create_table_sql(table: TableName, memory_optimized: bool = False) -> str:
    """Idempotent, race-safe DDL for the sessions table and its ``expires`` index.

    Several processes may start at once with ``create_table = true``: the disk-based DDL runs in one
    transaction that first takes an exclusive app lock (owner: the transaction), so the second
    process waits, then finds the table and the index and changes nothing. ``XACT_ABORT`` rolls a
    failed attempt back whole. The store also treats "already exists" (2714, 1913) as success.

    The memory-optimized variant (SQL Server 2016+/Azure SQL Premium) keeps rows in memory only
    (``DURABILITY = SCHEMA_ONLY``: sessions are lost on restart, which is often acceptable for
    sessions and caches) with a hash index on ``sid`` and a range index on ``expires``.
    """
    t = table.quoted
    obj = _n_literal(t)
    ix = index_name(table)
    if memory_optimized:
        return (
            f"IF OBJECT_ID({obj}, N'U') IS NULL\n"
            "BEGIN\n"
            f"    CREATE TABLE {t} (\n"
            "        [sid] nvarchar(255) COLLATE Latin1_General_100_BIN2 NOT NULL\n"
            "            PRIMARY KEY NONCLUSTERED HASH WITH (BUCKET_COUNT = 1048576),\n"
            "        [session] nvarchar(max) NOT NULL,\n"
            "        [expires] datetime NOT NULL,\n"
            f"        INDEX {quote_identifier(ix)} NONCLUSTERED ([expires])\n"
            "    ) WITH (MEMORY_OPTIMIZED = ON, DURABILITY = SCHEMA_ONLY);\n"
            "END;\n"
        )
    return (
        "SET XACT_ABORT ON;\n"
        "BEGIN TRANSACTION;\n"
        "DECLARE @lock int;\n"
        f"EXEC @lock = sp_getapplock @Resource = {_n_literal(create_lock_resource(table))}, "
        "@LockMode = N'Exclusive', @LockOwner = N'Transaction', @LockTimeout = 60000;\n"
        "IF @lock < 0\n"
        f"    THROW 50000, {_n_literal(f'beaker_mssql: create_table on {t} got no app lock in 60 s')}, 1;\n"
        f"IF OBJECT_ID({obj}, N'U') IS NULL\n"
        "BEGIN\n"
        f"    CREATE TABLE {t} (\n"
        "        [sid] nvarchar(255) NOT NULL PRIMARY KEY,\n"
        "        [session] nvarchar(max) NOT NULL,\n"
        "        [expires] datetime NOT NULL\n"
        "    );\n"
        "END;\n"
        f"IF NOT {expires_index_exists_sql(obj)}\n"
        f"    CREATE INDEX {quote_identifier(ix)} ON {t} ([expires]);\n"
        "COMMIT TRANSACTION;\n"
    )


def drop_table_sql(table: TableName) -> str:
    """Idempotent ``DROP TABLE`` (the tests' ``scratch_table`` fixture; kept next to the DDL it undoes)."""
    return f"IF OBJECT_ID({_n_literal(table.quoted)}, N'U') IS NOT NULL DROP TABLE {table.quoted};"
