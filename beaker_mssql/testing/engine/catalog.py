"""Read-only catalog views computed from the engine's tables (INFORMATION_SCHEMA.*, sys.*)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Optional

from ..profiles import babelfish_index_name
from ..results import MAX
from .storage import ColumnInfo, Database, Index, Table, column_max_length
from .types import T_BIT, T_DATETIME, T_INT, T_SYSNAME, SqlT

if TYPE_CHECKING:
    from . import Engine

Rows = list[list[Any]]


def _cols(*spec: tuple[str, SqlT, bool]) -> list[ColumnInfo]:
    return [ColumnInfo(n, t, nullable, i + 1) for i, (n, t, nullable) in enumerate(spec)]


_V3 = SqlT("varchar", 3)
_V10 = SqlT("varchar", 10)
_NV60 = SqlT("nvarchar", 60)
_C2 = SqlT("varchar", 2)

TYPE_IDS = {
    "tinyint": 48,
    "smallint": 52,
    "int": 56,
    "bigint": 127,
    "bit": 104,
    "float": 62,
    "datetime": 61,
    "datetime2": 42,
    "nvarchar": 231,
    "varchar": 167,
    "varbinary": 165,
}

VIEWS: dict[tuple[str, str], list[ColumnInfo]] = {
    ("INFORMATION_SCHEMA", "COLUMNS"): _cols(
        ("TABLE_CATALOG", T_SYSNAME, True),
        ("TABLE_SCHEMA", T_SYSNAME, True),
        ("TABLE_NAME", T_SYSNAME, False),
        ("COLUMN_NAME", T_SYSNAME, True),
        ("ORDINAL_POSITION", T_INT, True),
        ("COLUMN_DEFAULT", SqlT("nvarchar", 4000), True),
        ("IS_NULLABLE", _V3, True),
        ("DATA_TYPE", T_SYSNAME, True),
        ("CHARACTER_MAXIMUM_LENGTH", T_INT, True),
        ("CHARACTER_OCTET_LENGTH", T_INT, True),
        ("COLLATION_NAME", T_SYSNAME, True),
    ),
    ("INFORMATION_SCHEMA", "TABLES"): _cols(
        ("TABLE_CATALOG", T_SYSNAME, True),
        ("TABLE_SCHEMA", T_SYSNAME, True),
        ("TABLE_NAME", T_SYSNAME, False),
        ("TABLE_TYPE", _V10, True),
    ),
    ("SYS", "TABLES"): _cols(
        ("name", T_SYSNAME, False),
        ("object_id", T_INT, False),
        ("schema_id", T_INT, False),
        ("type", _C2, True),
        ("type_desc", _NV60, True),
        ("create_date", T_DATETIME, False),
        ("modify_date", T_DATETIME, False),
        ("is_memory_optimized", T_BIT, True),
    ),
    ("SYS", "OBJECTS"): _cols(
        ("name", T_SYSNAME, False),
        ("object_id", T_INT, False),
        ("schema_id", T_INT, False),
        ("parent_object_id", T_INT, False),
        ("type", _C2, True),
        ("type_desc", _NV60, True),
        ("create_date", T_DATETIME, False),
        ("modify_date", T_DATETIME, False),
    ),
    ("SYS", "SCHEMAS"): _cols(
        ("name", T_SYSNAME, False), ("schema_id", T_INT, False), ("principal_id", T_INT, True)
    ),
    ("SYS", "INDEXES"): _cols(
        ("object_id", T_INT, False),
        ("name", T_SYSNAME, True),
        ("index_id", T_INT, False),
        ("type", T_INT, False),
        ("type_desc", _NV60, True),
        ("is_unique", T_BIT, True),
        ("is_primary_key", T_BIT, True),
        ("is_unique_constraint", T_BIT, True),
        ("is_disabled", T_BIT, True),
        ("has_filter", T_BIT, True),
    ),
    ("SYS", "INDEX_COLUMNS"): _cols(
        ("object_id", T_INT, False),
        ("index_id", T_INT, False),
        ("index_column_id", T_INT, False),
        ("column_id", T_INT, False),
        ("key_ordinal", T_INT, False),
        ("partition_ordinal", T_INT, False),
        ("is_descending_key", T_BIT, True),
        ("is_included_column", T_BIT, True),
    ),
    ("SYS", "COLUMNS"): _cols(
        ("object_id", T_INT, False),
        ("name", T_SYSNAME, True),
        ("column_id", T_INT, False),
        ("system_type_id", T_INT, False),
        ("user_type_id", T_INT, False),
        ("max_length", T_INT, False),
        ("precision", T_INT, False),
        ("scale", T_INT, False),
        ("collation_name", T_SYSNAME, True),
        ("is_nullable", T_BIT, True),
        ("is_identity", T_BIT, False),
    ),
    ("SYS", "DATABASES"): _cols(
        ("name", T_SYSNAME, False),
        ("database_id", T_INT, False),
        ("is_read_committed_snapshot_on", T_BIT, True),
    ),
}

_DEFAULT_COLLATION = "SQL_Latin1_General_CP1_CI_AS"
_BIN_COLLATION = "Latin1_General_BIN2"


def _coll(c: ColumnInfo) -> Optional[str]:
    if c.type.kind in ("nvarchar", "varchar"):
        return _BIN_COLLATION if c.binary else _DEFAULT_COLLATION
    return None


def view_rows(engine: Engine, db: Database, schema: str, name: str) -> Rows:
    key = (schema.upper(), name.upper())
    tables = sorted(db.tables.values(), key=lambda t: t.object_id)
    rows: Rows = []
    if key == ("INFORMATION_SCHEMA", "COLUMNS"):
        for t in tables:
            for c in t.columns:
                length: Optional[int] = None
                octets: Optional[int] = None
                if c.type.kind in ("nvarchar", "varchar", "varbinary"):
                    length = -1 if c.type.length == MAX else c.type.length
                    octets = (
                        -1
                        if c.type.length == MAX
                        else (c.type.length * 2 if c.type.kind == "nvarchar" else c.type.length)
                    )
                rows.append(
                    [
                        db.name,
                        t.schema,
                        t.name,
                        c.name,
                        c.column_id,
                        None,
                        "YES" if c.nullable else "NO",
                        c.type.kind,
                        length,
                        octets,
                        _coll(c),
                    ]
                )
    elif key == ("INFORMATION_SCHEMA", "TABLES"):
        for t in tables:
            rows.append([db.name, t.schema, t.name, "BASE TABLE"])
    elif key == ("SYS", "TABLES"):
        for t in tables:
            rows.append([t.name, t.object_id, 1, "U ", "USER_TABLE", t.created, t.modified, False])
    elif key == ("SYS", "OBJECTS"):
        for t in tables:
            rows.append([t.name, t.object_id, 1, 0, "U ", "USER_TABLE", t.created, t.modified])
            for ix in t.indexes:
                if ix.primary_key or ix.unique_constraint:
                    rows.append(
                        [
                            ix.name,
                            constraint_object_id(t.object_id, ix.index_id),
                            1,
                            t.object_id,
                            "PK" if ix.primary_key else "UQ",
                            "PRIMARY_KEY_CONSTRAINT" if ix.primary_key else "UNIQUE_CONSTRAINT",
                            t.created,
                            t.modified,
                        ]
                    )
    elif key == ("SYS", "SCHEMAS"):
        rows.append(["dbo", 1, 1])
        rows.append(["guest", 2, 2])
        rows.append(["INFORMATION_SCHEMA", 3, 3])
        rows.append(["sys", 4, 4])
    elif key == ("SYS", "INDEXES"):
        for t in tables:
            if not any(ix.clustered for ix in t.indexes):
                rows.append([t.object_id, None, 0, 0, "HEAP", False, False, False, False, False])
            for ix in t.indexes:
                rows.append(
                    [
                        t.object_id,
                        _index_name(engine, t, ix),
                        ix.index_id,
                        1 if ix.clustered else 2,
                        "CLUSTERED" if ix.clustered else "NONCLUSTERED",
                        ix.unique,
                        ix.primary_key,
                        ix.unique_constraint,
                        False,
                        False,
                    ]
                )
    elif key == ("SYS", "INDEX_COLUMNS"):
        for t in tables:
            for ix in t.indexes:
                n = 0
                for ordinal, (ci, desc) in enumerate(ix.columns, start=1):
                    n += 1
                    rows.append(
                        [t.object_id, ix.index_id, n, t.columns[ci].column_id, ordinal, 0, desc, False]
                    )
                for ci in ix.included:
                    n += 1
                    rows.append([t.object_id, ix.index_id, n, t.columns[ci].column_id, 0, 0, False, True])
    elif key == ("SYS", "COLUMNS"):
        for t in tables:
            for c in t.columns:
                tid = TYPE_IDS[c.type.kind]
                prec = {"tinyint": 3, "smallint": 5, "int": 10, "bigint": 19, "bit": 1, "float": 53,
                        "datetime": 23, "datetime2": 27}.get(
                    c.type.kind, 0
                )
                scale = {"datetime": 3, "datetime2": 7}.get(c.type.kind, 0)
                rows.append(
                    [
                        t.object_id,
                        c.name,
                        c.column_id,
                        tid,
                        tid,
                        column_max_length(c.type),
                        prec,
                        scale,
                        _coll(c),
                        c.nullable,
                        False,
                    ]
                )
    elif key == ("SYS", "DATABASES"):
        rcsi = engine.profile.read_committed_snapshot
        for i, name in enumerate(engine.databases, start=1):
            rows.append([name, i, rcsi])
    return rows


def _index_name(engine: Engine, t: Table, ix: Index) -> str:
    """The name sys.indexes shows: Babelfish rewrites CREATE INDEX names (profiles.py)."""
    if engine.profile.rewritten_index_names and not (ix.primary_key or ix.unique_constraint):
        return babelfish_index_name(ix.name, t.name)
    return ix.name


def constraint_object_id(table_id: int, index_id: int) -> int:
    return table_id + 16 * index_id + 1


def lookup_view(schema: Optional[str], name: str) -> Optional[list[ColumnInfo]]:
    if schema is None:
        return None
    return VIEWS.get((schema.upper(), name.upper()))


ViewFn = Callable[[], Rows]
_ = datetime
