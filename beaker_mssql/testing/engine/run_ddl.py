"""DDL as it runs: CREATE TABLE / INDEX (constraints, generated constraint names), DROP, TRUNCATE,
with SQL Server's errors for each."""

from __future__ import annotations

from typing import Optional

from ..results import MAX, Done, SQLError
from . import ast as A
from .context import find_table, resolve_db
from .locks import TXN
from .run_base import RunBase
from .storage import ColumnInfo, Index, Table


class DdlStatements(RunBase):
    """CREATE / DROP / TRUNCATE for one batch run."""

    # ------------------------------------------------------------------ DDL

    def create_table(self, st: A.CreateTable) -> None:
        s = self.s
        eng = s.engine
        db = resolve_db(s, st.name)
        schema = st.name.schema or "dbo"
        if schema.upper() != "DBO":
            raise SQLError(
                2760,
                f'The specified schema name "{schema}" either does not exist or you do not have '
                "permission to use it.",
                16,
                1,
            )
        full = st.name.name
        if db.get(schema, full) is not None:
            raise SQLError(2714, f"There is already an object named '{full}' in the database.", 16, 6)
        if len(full) > 128:
            raise SQLError(
                103,
                f"The identifier that starts with '{full[:128]}' is too long. Maximum length is 128.",
                15,
                4,
            )
        if st.memory_optimized:
            raise SQLError(
                41337,
                "Cannot create memory optimized tables. To create memory optimized tables, the "
                "database must have a MEMORY_OPTIMIZED_FILEGROUP that is online and has at least "
                "one container.",
                16,
                100,
            )
        columns: list[ColumnInfo] = []
        seen: set[str] = set()
        for i, cd in enumerate(st.columns):
            if cd.name.upper() in seen:
                raise SQLError(
                    2705,
                    f"Column names in each table must be unique. Column name '{cd.name}' in table "
                    f"'{full}' is specified more than once.",
                    16,
                    3,
                )
            seen.add(cd.name.upper())
            nullable = cd.nullable if cd.nullable is not None else not cd.primary_key
            columns.append(
                ColumnInfo(cd.name, cd.type, nullable, i + 1, bool(cd.collation_binary), cd.default)
            )
        if not columns:
            raise SQLError(102, "Incorrect syntax near ')'.", 15, 1)
        table = Table(eng.new_object_id(), db.name, "dbo", full, columns, self.ctx.now_utc())
        pk_specs: list[tuple[Optional[str], list[tuple[str, bool]], Optional[bool], str]] = []
        for cd in st.columns:
            if cd.primary_key:
                pk_specs.append((cd.constraint_name, [(cd.name, False)], cd.clustered, "PRIMARY KEY"))
            elif cd.unique:
                pk_specs.append((cd.constraint_name, [(cd.name, False)], cd.clustered, "UNIQUE"))
        for tc in st.constraints:
            pk_specs.append((tc.name, tc.columns, tc.clustered, tc.kind))
        if sum(1 for p in pk_specs if p[3] == "PRIMARY KEY") > 1:
            raise SQLError(8110, f"Cannot add multiple PRIMARY KEY constraints to table '{full}'.", 16, 0)
        has_clustered = any(p[3] == "PRIMARY KEY" and p[2] is not False for p in pk_specs)
        next_id = 2
        for name, cols, clustered, kind in sorted(pk_specs, key=lambda p: p[3] != "PRIMARY KEY"):
            positions = []
            for cname, desc in cols:
                ci = _key_column(table, cname, full)
                col = columns[ci]
                if kind == "PRIMARY KEY":
                    if st.columns[ci].nullable is True:
                        raise SQLError(
                            8111,
                            f"Cannot define PRIMARY KEY constraint on nullable column in table '{full}'.",
                            16,
                            1,
                        )
                    col.nullable = False
                positions.append((ci, desc))
            if kind == "PRIMARY KEY":
                is_cl = clustered is not False
                ix = Index(
                    name or _constraint_name("PK", full, table.object_id),
                    1 if is_cl else next_id,
                    positions,
                    True,
                    primary_key=True,
                    clustered=is_cl,
                )
            elif kind == "UNIQUE":
                is_cl = clustered is True and not has_clustered
                ix = Index(
                    name or _constraint_name("UQ", full, table.object_id + next_id),
                    1 if is_cl else next_id,
                    positions,
                    True,
                    unique_constraint=True,
                    clustered=is_cl,
                )
            else:
                ix = Index(name or "", next_id, positions, kind == "UNIQUE INDEX", clustered=bool(clustered))
            if not ix.clustered or ix.index_id != 1:
                ix.index_id = max(ix.index_id, next_id) if not ix.clustered else 1
                if not ix.clustered:
                    next_id = ix.index_id + 1
            table.add_index(ix)
        db.add(table)
        eng.schema_version += 1
        eng.locks.acquire(s.session_id, ("t", table.object_id), "SCH-M", TXN)
        s.undo.append(("create", db, table))
        self.events.append(Done(None))

    def drop_table(self, st: A.DropTable) -> None:
        s = self.s
        eng = s.engine
        for name in st.names:
            t = find_table(s, name)
            if t is None:
                if st.if_exists:
                    continue
                raise SQLError(
                    3701,
                    f"Cannot drop the table '{name.display()}', because it does not exist or you do "
                    "not have permission.",
                    11,
                    5,
                )
            eng.locks.acquire(s.session_id, ("t", t.object_id), "SCH-M", TXN)
            db = resolve_db(s, name)
            db.remove(t)
            eng.schema_version += 1
            s.undo.append(("drop", db, t))
        self.events.append(Done(None))

    def create_index(self, st: A.CreateIndex) -> None:
        s = self.s
        eng = s.engine
        t = find_table(s, st.table)
        if t is None:
            raise SQLError(
                1088,
                f'Cannot find the object "{st.table.display()}" because it does not exist or you '
                "do not have permissions.",
                16,
                12,
            )
        if t.find_index(st.name) is not None:
            raise SQLError(
                1913,
                f"The operation failed because an index or statistics with name '{st.name}' already "
                f"exists on table '{t.qualified}'.",
                16,
                1,
                context={"index": st.name, "table": t.name},
            )
        positions = []
        for cname, desc in st.columns:
            positions.append((_key_column(t, cname, t.qualified), desc))
        included = [_index_column(t, cname) for cname in st.include]
        if st.clustered:
            existing = [ix for ix in t.indexes if ix.clustered]
            if existing:
                raise SQLError(
                    1902,
                    f"Cannot create more than one clustered index on table '{t.qualified}'. Drop the "
                    f"existing clustered index '{existing[0].name}' before creating another.",
                    16,
                    3,
                )
        eng.locks.acquire(s.session_id, ("t", t.object_id), "SCH-M", TXN)
        ix = Index(
            st.name,
            1 if st.clustered else t.next_index_id(),
            positions,
            st.unique,
            clustered=st.clustered,
            included=included,
        )
        t.add_index(ix)
        eng.schema_version += 1
        s.undo.append(("cidx", t, ix))
        self.events.append(Done(None))

    def drop_index(self, st: A.DropIndex) -> None:
        s = self.s
        eng = s.engine
        for tname, iname in st.items:
            t = find_table(s, tname)
            ix = t.find_index(iname) if t is not None else None
            if t is None or ix is None:
                if st.if_exists:
                    continue
                raise SQLError(
                    3701,
                    f"Cannot drop the index '{tname.display()}.{iname}', because it does not exist "
                    "or you do not have permission.",
                    11,
                    7,
                )
            if ix.primary_key or ix.unique_constraint:
                raise SQLError(
                    3723,
                    f"An explicit DROP INDEX is not allowed on index '{t.qualified}.{ix.name}'. It is "
                    f"being used for {ix.kind} constraint enforcement.",
                    16,
                    4,
                )
            eng.locks.acquire(s.session_id, ("t", t.object_id), "SCH-M", TXN)
            t.drop_index(ix)
            eng.schema_version += 1
            s.undo.append(("didx", t, ix))
        self.events.append(Done(None))

    def truncate(self, st: A.Truncate) -> None:
        s = self.s
        eng = s.engine
        t = find_table(s, st.name)
        if t is None:
            raise SQLError(
                4701,
                f'Cannot find the object "{st.name.display()}" because it does not exist or you do '
                "not have permissions.",
                16,
                1,
            )
        eng.locks.acquire(s.session_id, ("t", t.object_id), "SCH-M", TXN)
        old = t.truncate()
        s.undo.append(("trunc", t, old))
        self.events.append(Done(None))


def _index_column(t: Table, cname: str) -> int:
    """Position of a column named in an index or constraint (1911 if the table has no such column)."""
    ci = t.col_index.get(cname.upper())
    if ci is None:
        raise SQLError(1911, f"Column name '{cname}' does not exist in the target table or view.", 16, 1)
    return ci


def _key_column(t: Table, cname: str, table_text: str) -> int:
    """Like _index_column, for a key column: a (max) column cannot be one (1919).

    ``table_text`` is how the message names the table: CREATE TABLE says the bare name, CREATE INDEX
    schema.name.
    """
    ci = _index_column(t, cname)
    if t.columns[ci].type.length == MAX:
        raise SQLError(
            1919,
            f"Column '{t.columns[ci].name}' in table '{table_text}' is of a type that is invalid for use "
            "as a key column in an index.",
            16,
            1,
        )
    return ci


def _constraint_name(prefix: str, table: str, seed: int) -> str:
    h = (seed * 2654435761) & 0xFFFFFFFFFFFFFFFF
    return f"{prefix}__{table[:8]}__{h:016X}"
