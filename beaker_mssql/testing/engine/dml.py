"""The pieces of INSERT / UPDATE / DELETE / MERGE plans: the bound target, OUTPUT, the rows a write
touches (locked before they change), the plan objects, and MERGE's per-row helpers."""

from __future__ import annotations

from typing import Any, Callable, Optional

from ..results import Column, SQLError
from . import ast as A
from .access import Access, candidate_rows
from .compiled import CE, Fn
from .context import Ctx, Row, lock_key, output_fn, wire_column
from .expressions import Source
from .locks import TXN
from .parse_base import DEFAULT
from .query import Planner, SelectPlan
from .storage import Index, Table
from .versions import effective_hints

# ----------------------------------------------------------------------------- DML plans


class DmlTarget:
    """A bound INSERT/UPDATE/DELETE/MERGE target with its OUTPUT clause."""

    def __init__(self, table: Table, hints: list[str]) -> None:
        self.table = table
        self.hints = hints
        self.output: Optional[list[Fn]] = None
        self.output_columns: list[Column] = []


def bind_output(
    planner: Planner, t: Table, clause: Optional[A.OutputClause], inserted: bool, deleted: bool
) -> tuple[Optional[list[Fn]], list[Column]]:
    if clause is None:
        return None, []
    w = len(t.columns)
    sources = []
    if inserted:
        sources.append(Source("inserted", t.columns, 0, t, True))
    if deleted:
        sources.append(Source("deleted", t.columns, w, t, True))
    b = planner.binder(sources)
    fns: list[Fn] = []
    cols: list[Column] = []
    for item in clause.items:
        if item.expr is None:
            targets = [
                s for s in sources if item.star_qualifier is None or s.upper == item.star_qualifier.upper()
            ]
            if not targets:
                raise SQLError(
                    4104, f'The multi-part identifier "{item.star_qualifier}" could not be bound.', 16
                )
            for s in targets:
                for i, col in enumerate(s.columns):
                    p = s.offset + i

                    def f(c: Ctx, r: Any, _p: int = p) -> Any:
                        return r[_p]

                    fns.append(f)
                    cols.append(wire_column(col.name, col.type, col.nullable))
            continue
        if item.assign is not None:
            raise SQLError(102, "Incorrect syntax near '='.", 15)
        ce = b.compile(item.expr)
        fns.append(output_fn(ce))
        name = item.alias or (ce.col[1].name if ce.col is not None else "")
        cols.append(wire_column(name, ce.type, True))
    return fns, cols


def output_rows(
    fns: list[Fn], c: Ctx, pairs: list[tuple[Optional[Row], Optional[Row]]], width: int
) -> list[tuple[Any, ...]]:
    out = []
    nulls = [None] * width
    for new, old in pairs:
        combo = (new if new is not None else nulls) + (old if old is not None else nulls)
        out.append(tuple(f(c, combo) for f in fns))
    return out


def check_target_hints(hints: list[str], line: int) -> None:
    if {"NOLOCK", "READUNCOMMITTED"} & set(hints):
        raise SQLError(
            1065,
            "The NOLOCK and READUNCOMMITTED lock hints are not allowed for target tables of INSERT, "
            "UPDATE, DELETE or MERGE statements.",
            15,
            1,
            line,
        )


def target_rows(
    c: Ctx, t: Table, access: Access, hints: list[str], where: Optional[Fn], top: Optional[int]
) -> list[tuple[int, Row]]:
    """Rows an UPDATE/DELETE will change, with X locks taken on them (U/range locks as SQL Server would)."""
    hints = effective_hints(c.engine, hints)
    s = c.session
    sid = s.session_id
    locks = c.engine.locks
    oid = t.object_id
    hs = set(hints)
    serializable = bool(hs & {"HOLDLOCK", "SERIALIZABLE"}) or (
        s.isolation == "SERIALIZABLE" and not hs & {"READCOMMITTED", "READCOMMITTEDLOCK"}
    )
    readpast = "READPAST" in hs
    if "TABLOCKX" in hs or "TABLOCK" in hs:
        locks.acquire(sid, ("t", oid), "X", TXN)
    else:
        locks.acquire(sid, ("t", oid), "IX", TXN)
    rows, key = candidate_rows(c, t, access)
    if access.kind == "point":
        if key is None:
            return []
        res = ("k", oid, key)
        if readpast and locks.conflicts(sid, res, "U"):
            return []
        if not rows:
            if serializable:
                locks.acquire(sid, res, "U", TXN)
            else:
                locks.check(sid, res, "U")
            return []
        locks.check(sid, res, "U")
        rid, row = next(iter(rows))
        if where is not None and where(c, row) is not True:
            if serializable or "UPDLOCK" in hs:
                locks.acquire(sid, res, "U", TXN)
            return []
        locks.acquire(sid, res, "X", TXN)
        return [(rid, row)]
    if "TABLOCKX" not in hs and "TABLOCK" not in hs:
        if serializable:
            locks.acquire(sid, ("t", oid), "U", TXN)
        else:
            locked, first = locks.scan_conflicts(sid, oid, "U")
            if locked:
                if readpast:
                    rows = [(rid, row) for rid, row in rows if lock_key(t, row, rid) not in locked]
                else:
                    assert first is not None
                    raise first
    out: list[tuple[int, Row]] = []
    for rid, row in rows:
        if where is None or where(c, row) is True:
            out.append((rid, row))
            if top is not None and len(out) >= top:
                break
    for rid, row in out:
        locks.acquire(sid, ("k", oid, lock_key(t, row, rid)), "X", TXN)
    return out


class InsertPlan:
    def __init__(self) -> None:
        self.table: Optional[Table] = None
        self.rows: list[list[Fn]] = []
        self.select: Optional[SelectPlan] = None
        self.select_assign: list[Callable[[Ctx, Any], Any]] = []
        self.output: Optional[list[Fn]] = None
        self.output_columns: list[Column] = []
        self.hints: list[str] = []


class UpdatePlan:
    def __init__(self) -> None:
        self.table: Optional[Table] = None
        self.access: Optional[Access] = None
        self.where: Optional[Fn] = None
        self.sets: list[tuple[int, Fn]] = []
        self.var_sets: list[tuple[int, Any]] = []
        self.top: Optional[Fn] = None
        self.output: Optional[list[Fn]] = None
        self.output_columns: list[Column] = []
        self.hints: list[str] = []


class MergePlan:
    def __init__(self) -> None:
        self.table: Optional[Table] = None
        self.source_kind = ""
        self.source_obj: Any = None
        self.source_width = 0
        self.on: Optional[Fn] = None
        self.point: Optional[list[Fn]] = None  # PK key from the source row
        self.whens: list[tuple[A.MergeWhen, Optional[Fn], list[tuple[int, Fn]], list[tuple[int, Fn]]]] = []
        self.output: Optional[list[Fn]] = None
        self.output_columns: list[Column] = []
        self.hints: list[str] = []
        self.source_hints: list[str] = []
        self.top: Optional[Fn] = None


def _uses_target(ce: CE, tw: int) -> bool:
    return ce.col is not None and ce.col[0] < tw


def _key_row(t: Table, pk: Index, vals: list[Any]) -> Row:
    row: Row = [None] * len(t.columns)
    for (ci, _), v in zip(pk.columns, vals):
        row[ci] = v
    return row


def _assigned_twice(column: str, line: int) -> SQLError:
    """264: a column named twice in an INSERT column list, an UPDATE or a MERGE ... UPDATE SET list."""
    return SQLError(
        264,
        f"The column name '{column}' is specified more than once in the SET clause or column list of an "
        "INSERT. A column cannot be assigned more than one value in the same clause. Modify the clause to "
        "make sure that a column is updated only once. If this statement updates or inserts columns into a "
        "view, column aliasing can conceal the duplication in your code.",
        16,
        1,
        line,
    )


def _merge_row_action(
    w: A.MergeWhen, rid: int, row: Row, sets: list[tuple[int, Fn]], c: Ctx, combo: Row
) -> tuple[str, Optional[int], Optional[Row], Optional[Row]]:
    """WHEN MATCHED / WHEN NOT MATCHED BY SOURCE on one target row: DELETE it, or UPDATE it.

    ``sets`` are evaluated on ``combo``: the target row + the source row (NULLs when there is none).
    """
    if w.action == "DELETE":
        return ("DELETE", rid, None, row)
    new = list(row)
    for pos, fn in sets:
        new[pos] = fn(c, combo)
    return ("UPDATE", rid, new, row)


def _default_marker(c: Ctx, r: Any) -> Any:
    return DEFAULT
