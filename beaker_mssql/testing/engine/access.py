"""How a statement reaches a table's rows: index seek or scan (``choose_access``), and the read modes
(locking, NOLOCK, snapshot versions) that decide which locks a read takes and which row versions it sees."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Optional

from . import ast as A
from .compiled import CE, Fn
from .context import Ctx, Row, lock_key
from .expressions import Binder, Source
from .locks import STMT, TXN
from .storage import ColumnInfo, Index, Table
from .types import convert
from .versions import LOCKING_READ_HINTS, committed_versions, snapshot_rows

# ----------------------------------------------------------------------------- access paths


@dataclass
class Access:
    kind: str  # 'scan', 'point', 'range'
    key_fns: list[Fn]  # point: one per PK column (already coerced)
    key_cols: list[ColumnInfo]
    index: Optional[Index] = None
    low: Optional[Fn] = None
    low_incl: bool = True
    high: Optional[Fn] = None
    high_incl: bool = True


def _conjuncts(e: Optional[A.Expr]) -> list[A.Expr]:
    if e is None:
        return []
    if isinstance(e, A.And):
        out: list[A.Expr] = []
        for i in e.items:
            out.extend(_conjuncts(i))
        return out
    return [e]


_PREC_OK = {
    "tinyint": {"tinyint", "bit"},
    "smallint": {"tinyint", "smallint", "bit"},
    "int": {"tinyint", "smallint", "int", "bit"},
    "bigint": {"tinyint", "smallint", "int", "bigint", "bit"},
    "nvarchar": {"nvarchar", "varchar"},
    "varchar": {"varchar"},
    "datetime": {"datetime", "nvarchar", "varchar"},
    "datetime2": {"datetime2", "datetime", "nvarchar", "varchar"},
    "float": {"float", "tinyint", "smallint", "int", "bigint"},
    "bit": {"bit"},
    "varbinary": {"varbinary"},
}


def _key_conv(col: ColumnInfo, ce: CE) -> Optional[Fn]:
    """Coerce a row-independent expression to the column's type for an index lookup, or None if unsafe."""
    if ce.deps or ce.type.kind not in _PREC_OK.get(col.type.kind, set()):
        return None
    f = ce.fn
    src = ce.type
    if src.kind == col.type.kind or (src.is_string and col.type.is_string):
        return f
    dst = col.type

    def conv(c: Ctx, r: Any) -> Any:
        v = f(c, r)
        return None if v is None else convert(v, src, dst)

    return conv


def choose_access(binder: Binder, source: Source, table: Table, where: Optional[A.Expr]) -> Access:
    conj = _conjuncts(where)
    eqs: dict[int, Fn] = {}
    ranges: list[tuple[int, str, Fn]] = []
    base = source.offset
    width = len(source.columns)
    for cj in conj:
        if isinstance(cj, A.Compare) and cj.op in ("=", "<", "<=", ">", ">="):
            left = binder.compile(cj.left)
            right = binder.compile(cj.right)
            op = cj.op
            for a, b2, o in (
                (left, right, op),
                (right, left, {"<": ">", "<=": ">=", ">": "<", ">=": "<="}.get(op, op)),
            ):
                if a.col is not None and base <= a.col[0] < base + width and not b2.deps:
                    if a.binary is not None or b2.binary is not None:
                        # an explicit COLLATE: the CI index key still finds a superset; BIN2 filter reapplied
                        if a.binary is False or b2.binary is False:
                            pass
                    conv = _key_conv(a.col[1], b2)
                    if conv is None:
                        continue
                    ci = a.col[0] - base
                    if o == "=":
                        eqs.setdefault(ci, conv)
                    else:
                        ranges.append((ci, o, conv))
                    break
        elif isinstance(cj, A.Between) and not cj.negated:
            x = binder.compile(cj.operand)
            if x.col is not None and base <= x.col[0] < base + width:
                lo_ce = binder.compile(cj.low)
                hi_ce = binder.compile(cj.high)
                c1 = _key_conv(x.col[1], lo_ce)
                c2 = _key_conv(x.col[1], hi_ce)
                if c1 is not None and c2 is not None:
                    ranges.append((x.col[0] - base, ">=", c1))
                    ranges.append((x.col[0] - base, "<=", c2))
    pk = table.pk
    if pk is not None and all(ci in eqs for ci, _ in pk.columns):
        return Access(
            "point", [eqs[ci] for ci, _ in pk.columns], [table.columns[ci] for ci, _ in pk.columns], pk
        )
    for ix in table.indexes:
        if ix.primary_key:
            continue
        first = ix.columns[0][0]
        if first in eqs:
            return Access("range", [], [table.columns[first]], ix, eqs[first], True, eqs[first], True)
        lo: Optional[Fn] = None
        hi: Optional[Fn] = None
        lo_incl = hi_incl = True
        for ci, o, fn in ranges:
            if ci != first:
                continue
            if o in (">", ">=") and lo is None:
                lo, lo_incl = fn, o == ">="
            elif o in ("<", "<=") and hi is None:
                hi, hi_incl = fn, o == "<="
        if lo is not None or hi is not None:
            return Access("range", [], [table.columns[first]], ix, lo, lo_incl, hi, hi_incl)
    return Access("scan", [], [])


def candidate_rows(c: Ctx, t: Table, access: Access) -> tuple[Iterable[tuple[int, Row]], Any]:
    """Rows that may satisfy the WHERE clause, and (for a point lookup) the lookup key.

    A full scan returns the live ``items()`` view (no copy: ``DELETE TOP (n)`` stops early); callers
    finish iterating before they modify the table.
    """
    if access.kind == "point":
        vals = [f(c, None) for f in access.key_fns]
        if any(v is None for v in vals):
            return [], None
        if len(vals) == 1:
            key: Any = access.key_cols[0].key(vals[0])
        else:
            key = tuple(col.key(v) for col, v in zip(access.key_cols, vals))
        assert access.index is not None
        rowid = access.index.umap.get(key)
        if rowid is None:
            return [], key
        return [(rowid, t.rows[rowid])], key
    if access.kind == "range":
        assert access.index is not None
        col = access.key_cols[0]
        low = access.low(c, None) if access.low is not None else None
        high = access.high(c, None) if access.high is not None else None
        if (access.low is not None and low is None) or (access.high is not None and high is None):
            return [], None
        low_k = col.key(low) if low is not None else None
        high_k = col.key(high) if high is not None else None
        rows = t.rows
        rids = t.range_rowids(access.index, low_k, access.low_incl, high_k, access.high_incl)
        return ((rid, rows[rid]) for rid in rids), None
    return t.rows.items(), None


# ----------------------------------------------------------------------------- lock modes


class ReadMode:
    """How a statement reads one table, from its hints and the session's isolation level."""

    __slots__ = ("hold", "nolock", "readpast", "row_mode", "serializable", "snapshot", "table_mode")

    def __init__(
        self, hints: list[str], isolation: str, for_update: bool = False, rcsi: bool = False
    ) -> None:
        hs = set(hints)
        # READ_COMMITTED_SNAPSHOT (profiles azure, babelfish): a plain READ COMMITTED read takes no locks
        # and sees committed row versions (see versions.py).
        self.snapshot = (
            rcsi and not for_update and isolation == "READ COMMITTED" and not hs & LOCKING_READ_HINTS
        )
        self.nolock = not for_update and (
            bool(hs & {"NOLOCK", "READUNCOMMITTED"})
            or (
                isolation == "READ UNCOMMITTED"
                and not hs
                & {
                    "READCOMMITTED",
                    "READCOMMITTEDLOCK",
                    "HOLDLOCK",
                    "SERIALIZABLE",
                    "REPEATABLEREAD",
                    "UPDLOCK",
                    "XLOCK",
                }
            )
        )
        self.readpast = "READPAST" in hs
        self.serializable = bool(hs & {"HOLDLOCK", "SERIALIZABLE"}) or (
            isolation == "SERIALIZABLE"
            and not hs & {"READCOMMITTED", "READCOMMITTEDLOCK", "NOLOCK", "READUNCOMMITTED", "REPEATABLEREAD"}
        )
        repeatable = "REPEATABLEREAD" in hs or (
            isolation == "REPEATABLE READ"
            and not hs & {"READCOMMITTED", "READCOMMITTEDLOCK", "NOLOCK", "READUNCOMMITTED"}
        )
        if "XLOCK" in hs or for_update:
            self.row_mode = "X" if "XLOCK" in hs else "U"
        elif "UPDLOCK" in hs:
            self.row_mode = "U"
        else:
            self.row_mode = "S"
        self.hold = self.serializable or repeatable or self.row_mode != "S"
        if "TABLOCKX" in hs:
            self.table_mode = "X"
        elif "TABLOCK" in hs:
            self.table_mode = "S" if self.row_mode == "S" else ("U" if self.row_mode == "U" else "X")
        else:
            self.table_mode = ""


def read_table(c: Ctx, t: Table, access: Access, mode: ReadMode) -> tuple[Iterable[tuple[int, Row]], Any]:
    """Candidate rows of ``t`` with read locks checked/taken according to ``mode``."""
    rows, key = candidate_rows(c, t, access)
    if mode.snapshot:
        return snapshot_rows(rows, key, committed_versions(c.engine, c.session, t))
    if mode.nolock:
        return rows, key
    s = c.session
    sid = s.session_id
    locks = c.engine.locks
    oid = t.object_id
    hold_dur = TXN if mode.hold else STMT
    intent = "IS" if mode.row_mode == "S" else "IX"
    if mode.table_mode:
        locks.acquire(
            sid, ("t", oid), mode.table_mode, TXN if (mode.hold or mode.table_mode == "X") else STMT
        )
    elif mode.hold:
        locks.acquire(sid, ("t", oid), intent, TXN)
    else:
        locks.check(sid, ("t", oid), "IS")
    if mode.table_mode:
        return rows, key
    rmode = mode.row_mode
    if access.kind == "point":
        if key is None:
            return rows, key
        res = ("k", oid, key)
        if mode.hold and (rows or mode.serializable):
            if mode.readpast and locks.conflicts(sid, res, rmode):
                return [], key
            locks.acquire(sid, res, rmode, hold_dur)
        else:
            if mode.readpast:
                if locks.conflicts(sid, res, rmode):
                    return [], key
            else:
                locks.check(sid, res, rmode)
        return rows, key
    if mode.serializable:
        locks.acquire(sid, ("t", oid), "S" if rmode == "S" else "U" if rmode == "U" else "X", TXN)
        return rows, key
    locked, first = locks.scan_conflicts(sid, oid, rmode)
    if locked:
        if mode.readpast:
            if t.pk is not None:
                rows = [(rid, row) for rid, row in rows if t.pk_lock_key(row) not in locked]
            else:
                rows = [(rid, row) for rid, row in rows if rid not in locked]
        else:
            assert first is not None
            raise first
    if mode.hold:
        rows = list(rows)
        for rid, row in rows:
            locks.acquire(sid, ("k", oid, lock_key(t, row, rid)), rmode, hold_dur)
    return rows, key
