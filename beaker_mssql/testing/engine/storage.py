"""In-memory tables and indexes.

Rows are Python lists keyed by an internal row id. Every unique index (the primary key included) keeps a
dict from the collation-normalized key to the row id, so equality lookups and duplicate checks are O(1);
every non-primary index also keeps a sorted list of (sort key, row id) so range predicates such as
``[expires] <= GETUTCDATE()`` and ``DELETE TOP (n)`` sweeps do not scan the whole table.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Optional

from ..results import MAX, SQLError
from .types import SqlT, bin_key, ci_key


@dataclass
class ColumnInfo:
    name: str
    type: SqlT
    nullable: bool
    column_id: int
    binary: bool = False  # COLLATE *_BIN2 / *_CS_*: case-sensitive comparisons
    default: Any = None  # ast.Expr or None

    def key(self, v: Any) -> Any:
        if isinstance(v, str):
            return bin_key(v) if self.binary else ci_key(v)
        if isinstance(v, bytes):
            return v.rstrip(b"\x00")
        if isinstance(v, bool):
            return int(v)
        return v


def sort_key(v: Any) -> tuple[Any, ...]:
    """Orders NULL first, like SQL Server."""
    return (0,) if v is None else (1, v)


@dataclass(eq=False)
class Index:
    name: str
    index_id: int
    columns: list[tuple[int, bool]]  # (column position, descending)
    unique: bool
    primary_key: bool = False
    clustered: bool = False
    unique_constraint: bool = False
    included: list[int] = field(default_factory=list)
    umap: dict[Any, int] = field(default_factory=dict)
    sorted: list[tuple[Any, int]] = field(default_factory=list)
    dead: int = 0  # stale entries in ``sorted`` (deleted lazily: a delete is O(1), not a list memmove)
    keyfn: Callable[[list[Any]], Any] = field(default=lambda row: None)
    sortfn: Callable[[list[Any]], Any] = field(default=lambda row: None)

    @property
    def kind(self) -> str:
        if self.primary_key:
            return "PRIMARY KEY"
        if self.unique_constraint:
            return "UNIQUE KEY"
        return "INDEX"


class Table:
    def __init__(
        self,
        object_id: int,
        database: str,
        schema: str,
        name: str,
        columns: list[ColumnInfo],
        created: datetime,
    ) -> None:
        self.object_id = object_id
        self.database = database
        self.schema = schema
        self.name = name
        self.columns = columns
        self.col_index = {c.name.upper(): i for i, c in enumerate(columns)}
        self.indexes: list[Index] = []
        self.pk: Optional[Index] = None
        self.rows: dict[int, list[Any]] = {}
        self.next_rowid = 1
        self.created = created
        self.modified = created
        self.pk_lock_key: Callable[[list[Any]], Any] = lambda row: None

    # ------------------------------------------------------------------ naming

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def full(self) -> str:
        return f"{self.database}.{self.schema}.{self.name}"

    # ------------------------------------------------------------------ indexes

    def _make_keyfn(self, cols: list[tuple[int, bool]]) -> Callable[[list[Any]], Any]:
        infos = [(i, self.columns[i]) for i, _ in cols]
        if len(infos) == 1:
            i0, c0 = infos[0]
            key0 = c0.key
            return lambda row: key0(row[i0])
        return lambda row: tuple(c.key(row[i]) for i, c in infos)

    def _make_sortfn(self, cols: list[tuple[int, bool]]) -> Callable[[list[Any]], Any]:
        i0, c0 = cols[0][0], self.columns[cols[0][0]]
        key0 = c0.key
        return lambda row: sort_key(key0(row[i0]))

    def add_index(self, index: Index) -> None:
        """Build the index over the existing rows; raises 1505 on duplicates for a unique index."""
        index.keyfn = self._make_keyfn(index.columns)
        index.sortfn = self._make_sortfn(index.columns)
        if index.unique:
            umap: dict[Any, int] = {}
            for rowid, row in self.rows.items():
                k = index.keyfn(row)
                if k in umap:
                    raise SQLError(
                        1505,
                        f"The CREATE UNIQUE INDEX statement terminated because a duplicate key was found for "
                        f"the object name '{self.qualified}' and the index name '{index.name}'. "
                        "The duplicate key "
                        f"value is ({self.key_text(index, row)}).",
                        16,
                    )
                umap[k] = rowid
            index.umap = umap
        if not index.primary_key:
            index.sorted = sorted((index.sortfn(row), rowid) for rowid, row in self.rows.items())
        self.indexes.append(index)
        self.indexes.sort(key=lambda ix: ix.index_id)
        if index.primary_key:
            self.pk = index
            self.pk_lock_key = index.keyfn

    def drop_index(self, index: Index) -> None:
        self.indexes.remove(index)
        if index is self.pk:
            self.pk = None
            self.pk_lock_key = lambda row: None

    def find_index(self, name: str) -> Optional[Index]:
        u = name.upper()
        for ix in self.indexes:
            if ix.name.upper() == u:
                return ix
        return None

    def next_index_id(self) -> int:
        used = {ix.index_id for ix in self.indexes}
        i = 2
        while i in used:
            i += 1
        return i

    def key_text(self, index: Index, row: list[Any]) -> str:
        parts = []
        for i, _ in index.columns:
            v = row[i]
            if v is None:
                parts.append("<NULL>")
            elif isinstance(v, datetime):
                parts.append(v.strftime("%Y-%m-%d %H:%M:%S.") + f"{v.microsecond // 1000:03d}")
            elif isinstance(v, bytes):
                parts.append("0x" + v.hex().upper())
            elif isinstance(v, bool):
                parts.append("1" if v else "0")
            else:
                parts.append(str(v))
        return ", ".join(parts)

    def duplicate_error(self, index: Index, row: list[Any]) -> SQLError:
        if index.primary_key or index.unique_constraint:
            return SQLError(
                2627,
                f"Violation of {index.kind} constraint '{index.name}'. Cannot insert duplicate key in object "
                f"'{self.qualified}'. The duplicate key value is ({self.key_text(index, row)}).",
                14,
            )
        return SQLError(
            2601,
            f"Cannot insert duplicate key row in object '{self.qualified}' with unique index '{index.name}'. "
            f"The duplicate key value is ({self.key_text(index, row)}).",
            14,
        )

    # ------------------------------------------------------------------ row operations (no undo here)

    def check_insert(self, row: list[Any]) -> None:
        for ix in self.indexes:
            if ix.unique and ix.keyfn(row) in ix.umap:
                raise self.duplicate_error(ix, row)

    def insert(self, row: list[Any], rowid: Optional[int] = None) -> int:
        """Insert a row (caller has checked types); raises 2627/2601 without changing anything."""
        for ix in self.indexes:
            if ix.unique and ix.keyfn(row) in ix.umap:
                raise self.duplicate_error(ix, row)
        if rowid is None:
            rowid = self.next_rowid
            self.next_rowid += 1
        elif rowid >= self.next_rowid:
            self.next_rowid = rowid + 1
        self.rows[rowid] = row
        for ix in self.indexes:
            if ix.unique:
                ix.umap[ix.keyfn(row)] = rowid
            if not ix.primary_key:
                self._sorted_add(ix, ix.sortfn(row), rowid)
        return rowid

    def delete(self, rowid: int) -> list[Any]:
        row = self.rows.pop(rowid)
        for ix in self.indexes:
            if ix.unique:
                k = ix.keyfn(row)
                if ix.umap.get(k) == rowid:
                    del ix.umap[k]
            if not ix.primary_key:
                ix.dead += 1
                self._maybe_compact(ix)
        return row

    @staticmethod
    def _sorted_add(ix: Index, sk: Any, rowid: int) -> None:
        lst = ix.sorted
        entry = (sk, rowid)
        i = bisect.bisect_left(lst, entry)
        if i < len(lst) and lst[i] == entry:
            ix.dead -= 1  # a stale entry for exactly this row and key becomes live again
        else:
            lst.insert(i, entry)

    def _live(self, ix: Index, sk: Any, rowid: int) -> bool:
        row = self.rows.get(rowid)
        return row is not None and ix.sortfn(row) == sk

    def _maybe_compact(self, ix: Index) -> None:
        if ix.dead <= 1024:
            return
        # Deletes in index order (the sweep's DELETE TOP (n) ... WHERE expires <= now) leave their dead
        # entries at the front: dropping that run costs one memmove, where the full rebuild below is
        # O(n) Python work that stalled one sweep batch in four for ~100 ms over 100k rows.
        lst = ix.sorted
        front = 0
        while front < len(lst) and not self._live(ix, *lst[front]):
            front += 1
        if front:
            del lst[:front]
            ix.dead = max(0, ix.dead - front)
        if ix.dead > 1024 and ix.dead * 2 > len(lst):
            ix.sorted = [(sk, rid) for sk, rid in lst if self._live(ix, sk, rid)]
            ix.dead = 0

    def update_many(self, changes: list[tuple[int, list[Any]]]) -> list[list[Any]]:
        """Replace rows; uniqueness is checked for the statement as a whole (as SQL Server does).

        Returns the old rows. On a duplicate key nothing is changed and 2627/2601 is raised.
        """
        old_rows = [self.rows[rowid] for rowid, _ in changes]
        touched = []
        for ix in self.indexes:
            # A unique index is touched when its key changes (its sort key is a function of the key); any
            # other index only keeps ``sorted``, so only its sort key matters. Computing just that one key
            # per index halves the collation-key work of the common one-row UPDATE.
            fn = ix.keyfn if ix.unique else ix.sortfn
            if not all(fn(o) == fn(n) for o, (_, n) in zip(old_rows, changes)):
                touched.append(ix)
        for ix in touched:
            if ix.unique:
                for (rowid, _), o in zip(changes, old_rows):
                    k = ix.keyfn(o)
                    if ix.umap.get(k) == rowid:
                        del ix.umap[k]
                added: list[Any] = []
                for rowid, n in changes:
                    k = ix.keyfn(n)
                    if k in ix.umap:
                        for a in added:
                            del ix.umap[a]
                        for (rid, _), o in zip(changes, old_rows):
                            ix.umap[ix.keyfn(o)] = rid
                        # restore indexes already switched
                        for prev in touched:
                            if prev is ix:
                                break
                            if prev.unique:
                                for _rid, nn in changes:
                                    prev.umap.pop(prev.keyfn(nn), None)
                                for (rid, _), o in zip(changes, old_rows):
                                    prev.umap[prev.keyfn(o)] = rid
                        raise self.duplicate_error(ix, n)
                    ix.umap[k] = rowid
                    added.append(k)
        for ix in touched:
            if not ix.primary_key:
                for rowid, n in changes:
                    ix.dead += 1
                    self._sorted_add(ix, ix.sortfn(n), rowid)
        for rowid, n in changes:
            self.rows[rowid] = n
        for ix in touched:
            if not ix.primary_key:
                self._maybe_compact(ix)
        return old_rows

    def truncate(self) -> dict[int, list[Any]]:
        old = self.rows
        self.rows = {}
        for ix in self.indexes:
            ix.umap = {}
            ix.sorted = []
            ix.dead = 0
        return old

    def restore(self, rows: dict[int, list[Any]]) -> None:
        self.truncate()
        for rowid, row in rows.items():
            self.insert(row, rowid)

    # ------------------------------------------------------------------ access paths

    def range_rowids(self, ix: Index, low: Any, low_incl: bool, high: Any, high_incl: bool) -> Iterator[int]:
        """Row ids whose first index column lies in the range (None = unbounded), in index order.

        Lazy (``DELETE TOP (n)`` stops after n rows); callers finish iterating before they modify the table.
        """
        lst = ix.sorted
        if low is None:
            start = bisect.bisect_left(lst, ((1,),))
        else:
            start = (
                bisect.bisect_left(lst, (sort_key(low),))
                if low_incl
                else bisect.bisect_right(lst, (sort_key(low), float("inf")))
            )
        if high is None:
            stop = len(lst)
        else:
            stop = (
                bisect.bisect_right(lst, (sort_key(high), float("inf")))
                if high_incl
                else bisect.bisect_left(lst, (sort_key(high),))
            )
        rows = self.rows
        sortfn = ix.sortfn

        def gen() -> Iterator[int]:
            for i in range(start, min(stop, len(lst))):
                sk, rid = lst[i]
                row = rows.get(rid)
                if row is not None and sortfn(row) == sk:
                    yield rid

        return gen()


def column_max_length(t: SqlT) -> int:
    """sys.columns.max_length: bytes (nvarchar counts 2 per character), -1 for max."""
    if t.length == MAX:
        return -1
    sizes = {"tinyint": 1, "smallint": 2, "int": 4, "bigint": 8, "bit": 1, "float": 8, "datetime": 8,
             "datetime2": 8}
    return sizes.get(
        t.kind, t.length * 2 if t.kind == "nvarchar" else t.length
    )


class Database:
    def __init__(self, name: str) -> None:
        self.name = name
        self.tables: dict[tuple[str, str], Table] = {}

    def get(self, schema: str, name: str) -> Optional[Table]:
        return self.tables.get((schema.upper(), name.upper()))

    def add(self, table: Table) -> None:
        self.tables[(table.schema.upper(), table.name.upper())] = table

    def remove(self, table: Table) -> None:
        self.tables.pop((table.schema.upper(), table.name.upper()), None)

    def by_id(self, object_id: int) -> Optional[Table]:
        for t in self.tables.values():
            if t.object_id == object_id:
                return t
        return None
