"""Binds statements to plans and runs them: reads, writes, locking, undo, MERGE, DDL, EXEC.

Each statement runs with the engine mutex held. Locks are requested *before* rows are modified; a
request that conflicts raises ``LockConflict``, the session undoes whatever the statement changed,
waits, and runs the statement again from scratch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from ..results import MAX, Column, Done, Event, ResultSet, SQLError
from . import ast as A
from .catalog import lookup_view, view_rows
from .compiled import CE, Fn
from .expressions import Binder, Scope, Source
from .locks import STMT, TXN, LockConflict
from .parse_base import DEFAULT
from .storage import ColumnInfo, Database, Index, Table, sort_key
from .types import (
    INTEGER_KINDS,
    STRING_KINDS,
    T_INT,
    T_NULL,
    SqlT,
    check_implicit,
    convert,
    round_datetime,
    value_key,
)
from .versions import LOCKING_READ_HINTS, committed_versions, effective_hints, snapshot_rows

if TYPE_CHECKING:
    from . import EngineSession

Row = list[Any]


class Ctx:
    """Per-batch execution state: literal values, variables, and the statement's clock reading."""

    __slots__ = ("batch", "engine", "params", "session", "t", "vars")

    def __init__(self, session: EngineSession, params: list[Any], batch: A.Batch) -> None:
        self.session = session
        self.engine = session.engine
        self.params = params
        self.vars: list[Any] = [None] * batch.nvars
        self.batch = batch
        self.t: Optional[datetime] = None

    def _clock(self) -> datetime:
        if self.t is None:
            self.t = self.engine.clock.utcnow()
        return self.t

    def now_utc(self) -> datetime:
        return round_datetime(self._clock())

    def now_utc2(self) -> datetime:
        return self._clock()

    def now_local(self) -> datetime:
        return round_datetime(self._clock() + self.engine.clock.utc_offset)

    def now_local2(self) -> datetime:
        return self._clock() + self.engine.clock.utc_offset


# ----------------------------------------------------------------------------- helpers


def wire_column(name: str, t: SqlT, nullable: bool = True) -> Column:
    st, length = t.wire()
    return Column(name, st, length, nullable)


def output_fn(ce: CE) -> Fn:
    """The closure producing a result column: datetime2 values are sent as datetime (rounded to 1/300 s)."""
    if ce.type.kind != "datetime2":
        return ce.fn
    f = ce.fn

    def rounded(c: Ctx, r: Any) -> Any:
        v = f(c, r)
        if v is None:
            return None
        try:
            return round_datetime(v)
        except OverflowError:
            raise SQLError(
                242,
                "The conversion of a datetime2 data type to a datetime data type resulted in an "
                "out-of-range value.",
                16,
            ) from None

    return rounded


def resolve_db(session: EngineSession, name: A.ObjName) -> Database:
    eng = session.engine
    if name.database is not None:
        db = eng.database_named(name.database)
        if db is None:
            raise SQLError(208, f"Invalid object name '{name.display()}'.", 16, 1)
        return db
    db = eng.database_named(session.database)
    assert db is not None
    return db


def find_table(session: EngineSession, name: A.ObjName) -> Optional[Table]:
    db = resolve_db(session, name)
    return db.get(name.schema or "dbo", name.name)


def require_table(session: EngineSession, name: A.ObjName) -> Table:
    t = find_table(session, name)
    if t is None:
        db = name.database or session.database
        raise SQLError(208, f"Invalid object name '{name.display()}'.", 16, 1,
                       context={"database": db, "schema": name.schema or "dbo", "name": name.name})
    return t


def lock_key(t: Table, row: Row, rowid: int) -> Any:
    return t.pk_lock_key(row) if t.pk is not None else rowid


def not_null_error(t: Table, col: ColumnInfo, verb: str) -> SQLError:
    return SQLError(
        515,
        f"Cannot insert the value NULL into column '{col.name}', table '{t.full}'; column does not "
        f"allow nulls. {verb} fails.",
        16,
        2,
    )


def make_assign(t: Table, col: ColumnInfo, ce: CE, verb: str) -> Fn:
    """Value of ``ce`` converted for storage in ``col``: 257/245/241, 2628 truncation, 515 NULL."""
    src = ce.type
    f = ce.fn
    dst = col.type
    if src.kind != "null":
        check_implicit(src, dst)
    need_conv = (
        src.kind != "null"
        and src.kind != dst.kind
        and not (src.kind in STRING_KINDS and dst.kind in STRING_KINDS)
    )
    conv_t = SqlT(dst.kind, MAX) if dst.kind in ("nvarchar", "varchar", "varbinary") else dst
    limit = dst.length if dst.kind in ("nvarchar", "varchar", "varbinary") and dst.length != MAX else 0
    nullable = col.nullable
    is_int = dst.kind in ("tinyint", "smallint", "int", "bigint")

    def assign(c: Ctx, r: Any) -> Any:
        v = f(c, r)
        if v is None or v is DEFAULT:
            if v is DEFAULT:
                v = default_value(c, t, col)
                if v is not None:
                    return v
            if not nullable:
                raise not_null_error(t, col, verb)
            return None
        if need_conv:
            v = convert(v, src, conv_t)
        elif is_int and src.kind != dst.kind:
            v = convert(v, src, dst)
        if limit and _length(v) > limit:
            # Only trailing spaces beyond the limit: SQL Server trims them silently.
            if isinstance(v, str) and v[limit:].strip(" ") == "" and _length(v[:limit]) <= limit:
                v = v[:limit]
            else:
                shown = v[:limit] if isinstance(v, str) else "0x" + v[:limit].hex().upper()
                raise SQLError(
                    2628,
                    f"String or binary data would be truncated in table '{t.full}', column "
                    f"'{col.name}'. Truncated value: '{shown}'.",
                    16,
                    1,
                    context={"length": limit},
                )
        return v

    return assign


def _length(value: Any) -> int:
    """Length as SQL Server counts it for nvarchar(n)/varbinary(n): UTF-16 code units or bytes.

    A character outside the Basic Multilingual Plane (an emoji) is two units, so 200 emoji do not fit
    nvarchar(255) on SQL Server (2628), although they are 200 Python characters.
    """
    if isinstance(value, str) and not value.isascii():
        return len(value.encode("utf-16-le")) // 2
    return len(value)


def default_value(c: Ctx, t: Table, col: ColumnInfo) -> Any:
    if col.default is None:
        return None
    binder = Binder(Scope([]), [], lambda s: (None, []))
    ce = binder.compile(col.default)
    src = ce.type
    v = ce.fn(c, None)
    if v is None:
        return None
    if src.kind != col.type.kind and not (src.kind in STRING_KINDS and col.type.kind in STRING_KINDS):
        v = convert(v, src, col.type)
    return v


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


# ----------------------------------------------------------------------------- SELECT


class SelectPlan:
    def __init__(self) -> None:
        self.sources: list[tuple[str, Any, Source, Optional[Fn], ReadModeSpec]] = []
        self.access: Optional[Access] = None
        self.where: Optional[Fn] = None
        self.grouped = False
        self.aggs: list[tuple[str, Optional[Fn], bool, SqlT]] = []
        self.group_fns: list[Fn] = []
        self.having: Optional[Fn] = None
        self.items: list[Fn] = []
        self.columns: list[Column] = []
        self.types: list[SqlT] = []
        self.order: list[tuple[Fn, bool, bool]] = []  # (key fn on output/input row, desc, on_output)
        self.top: Optional[Fn] = None
        self.distinct = False
        self.assigns: list[tuple[int, str, SqlT]] = []
        self.width = 0
        self.empty_row: Row = []

    def run(self, c: Ctx, limit: int = 0) -> list[tuple[Any, ...]]:
        rows = list(self.input_rows(c))
        return self.finish(c, rows, limit)

    def input_rows(self, c: Ctx) -> list[Row]:
        first = True
        result: list[Row] = []
        where = self.where
        nsrc = len(self.sources)
        if nsrc == 0:  # SELECT without FROM: one row (SELECT 1, SELECT @result, SELECT GETUTCDATE())
            return [[]] if where is None or where(c, []) is True else []
        for kind, obj, src, on, spec in self.sources:
            if kind == "table":
                eng = c.engine
                mode = ReadMode(
                    effective_hints(eng, spec.hints), c.session.isolation,
                    rcsi=eng.profile.read_committed_snapshot,
                )
                access = self.access if first else Access("scan", [], [])
                assert access is not None
                got, _ = read_table(c, obj, access, mode)
                rows = [r for _, r in got]
            elif kind == "view":
                rows = obj(c)
            elif kind == "derived":
                rows = [list(r) for r in obj.run(c)]
            elif kind == "values":
                rows = [[f(c, None) for f in fns] for fns in obj]
            else:
                rows = [[]]
            if first:
                if nsrc == 1:
                    if where is not None:
                        return [r for r in rows if where(c, r) is True]
                    return rows
                result = rows
                first = False
                continue
            joined: list[Row] = []
            jkind = spec.join
            pad = [None] * len(src.columns)
            for left in result:
                matched = False
                for right in rows:
                    combo = left + right
                    if on is None or on(c, combo) is True:
                        joined.append(combo)
                        matched = True
                if not matched and jkind == "LEFT":
                    joined.append(left + pad)
            result = joined
        if where is not None:
            result = [r for r in result if where(c, r) is True]
        return result

    def finish(self, c: Ctx, rows: list[Row], limit: int) -> list[tuple[Any, ...]]:
        if self.grouped:
            rows = self.group(c, rows)
        out_pairs: list[tuple[tuple[Any, ...], Row]]
        items = self.items
        out_pairs = [(tuple(f(c, r) for f in items), r) for r in rows]
        if self.distinct:
            seen: set[Any] = set()
            uniq = []
            for o, r in out_pairs:
                k = tuple(value_key(v) for v in o)
                if k not in seen:
                    seen.add(k)
                    uniq.append((o, r))
            out_pairs = uniq
        for fn, desc, on_output in reversed(self.order):
            if on_output:
                out_pairs.sort(key=lambda p, fn=fn: sort_key(value_key(fn(c, p[0]))), reverse=desc)  # type: ignore[misc]
            else:
                out_pairs.sort(key=lambda p, fn=fn: sort_key(value_key(fn(c, p[1]))), reverse=desc)  # type: ignore[misc]
        out = [o for o, _ in out_pairs]
        if self.top is not None:
            n = self.top(c, None)
            if n is None or n < 0:
                raise SQLError(
                    1060,
                    "The number of rows provided for a TOP or FETCH clauses row count parameter "
                    "must be an integer.",
                    16,
                )
            out = out[: int(n)]
        if limit:
            out = out[:limit]
        return out

    def group(self, c: Ctx, rows: list[Row]) -> list[Row]:
        groups: dict[Any, list[Row]] = {}
        if self.group_fns:
            for r in rows:
                k = tuple(value_key(f(c, r)) for f in self.group_fns)
                g = groups.get(k)
                if g is None:
                    groups[k] = [r]
                else:
                    g.append(r)
        else:
            groups[()] = rows
        out: list[Row] = []
        for members in groups.values():
            aggs = [
                compute_aggregate(c, kind, fn, distinct, t, members) for kind, fn, distinct, t in self.aggs
            ]
            rep = members[0] if members else list(self.empty_row)
            grow = [*list(rep), aggs]
            if self.having is not None and self.having(c, grow) is not True:
                continue
            out.append(grow)
        return out


class ReadModeSpec:
    __slots__ = ("hints", "join")

    def __init__(self, hints: list[str], join: str = "") -> None:
        self.hints = hints
        self.join = join


def compute_aggregate(c: Ctx, kind: str, fn: Optional[Fn], distinct: bool, t: SqlT, rows: list[Row]) -> Any:
    if kind in ("COUNT", "COUNT_BIG") and fn is None:
        n = len(rows)
        if kind == "COUNT" and n > 2**31 - 1:
            raise SQLError(8115, "Arithmetic overflow error converting expression to data type int.", 16)
        return n
    assert fn is not None
    vals = [v for v in (fn(c, r) for r in rows) if v is not None]
    if distinct:
        seen: dict[Any, Any] = {}
        for v in vals:
            seen.setdefault(value_key(v), v)
        vals = list(seen.values())
    if kind in ("COUNT", "COUNT_BIG"):
        return len(vals)
    if not vals:
        return None
    if kind == "MIN":
        return min(vals, key=value_key)
    if kind == "MAX":
        return max(vals, key=value_key)
    total = sum(vals)
    if kind == "SUM":
        if t.kind == "int" and not -(2**31) <= total <= 2**31 - 1:
            raise SQLError(8115, "Arithmetic overflow error converting expression to data type int.", 16)
        if t.kind == "bigint" and not -(2**63) <= total <= 2**63 - 1:
            raise SQLError(8115, "Arithmetic overflow error converting expression to data type bigint.", 16)
        return total
    if t.kind in INTEGER_KINDS:
        q = abs(total) // len(vals)
        return q if total >= 0 else -q
    return total / len(vals)


class Planner:
    """Builds plans for one session/database at a given schema version."""

    def __init__(self, session: EngineSession, var_types: list[SqlT]) -> None:
        self.session = session
        self.var_types = var_types

    # -- sources

    def source_for(self, ref: A.TableRef, offset: int) -> tuple[str, Any, Source]:
        s = self.session
        if ref.derived is not None:
            sub = self.select(ref.derived)
            names = ref.column_aliases or [col.name for col in sub.columns]
            if len(names) != len(sub.columns):
                raise SQLError(
                    8159, f"'{ref.alias}' has fewer columns than were specified in the column list.", 16
                )
            for i, n in enumerate(names):
                if n == "":
                    raise SQLError(
                        8155, f"No column name was specified for column {i + 1} of '{ref.alias}'.", 16
                    )
            cols = [ColumnInfo(n, t, True, i + 1) for i, (n, t) in enumerate(zip(names, sub.types))]
            return "derived", sub, Source(ref.alias or "", cols, offset, None, True)
        if ref.values is not None:
            binder = Binder(Scope([]), self.var_types, self.subquery)
            compiled = [[binder.compile(e) for e in row] for row in ref.values]
            names = ref.column_aliases or []
            types = []
            for i in range(len(names)):
                t = T_NULL
                for row in compiled:
                    from .types import result_type

                    t = result_type(t, row[i].type)
                types.append(t if t.kind != "null" else T_INT)
            fns = [[binder.coerce(ce, types[i]) for i, ce in enumerate(row)] for row in compiled]
            cols = [ColumnInfo(n, t, True, i + 1) for i, (n, t) in enumerate(zip(names, types))]
            return "values", fns, Source(ref.alias or "", cols, offset, None, True)
        name = ref.name
        view_cols = lookup_view(name.schema, name.name)
        if view_cols is not None:
            db = resolve_db(s, name)
            schema = name.schema or ""
            vname = name.name

            def rows_fn(c: Ctx) -> list[Row]:
                return view_rows(c.engine, db, schema, vname)

            alias = ref.alias or name.name
            return "view", rows_fn, Source(alias, view_cols, offset, None, ref.alias is not None, name.schema)
        table = require_table(s, name)
        alias = ref.alias or table.name
        return (
            "table",
            table,
            Source(alias, table.columns, offset, table, ref.alias is not None, table.schema),
        )

    def subquery(self, sel: A.Select) -> tuple[Any, list[SqlT]]:
        plan = self.select(sel)
        return plan.run, plan.types

    def binder(self, sources: list[Source], agg: bool = False) -> Binder:
        return Binder(Scope(sources), self.var_types, self.subquery, {} if agg else None)

    # -- SELECT

    def select(self, sel: A.Select) -> SelectPlan:
        plan = SelectPlan()
        sources: list[Source] = []
        offset = 0
        refs: list[tuple[A.TableRef, str, Optional[A.Expr]]] = []
        if sel.from_ is not None:
            refs.append((sel.from_, "", None))
            for j in sel.joins:
                refs.append((j.table, j.kind, j.on))
        specs = []
        for ref, jkind, on in refs:
            kind, obj, src = self.source_for(ref, offset)
            for s2 in sources:
                if s2.upper == src.upper:
                    raise SQLError(
                        1013,
                        f'The objects "{s2.name}" and "{src.name}" in the FROM clause have the '
                        "same exposed names. Use correlation names to distinguish them.",
                        16,
                    )
            sources.append(src)
            offset += len(src.columns)
            specs.append((kind, obj, src, on, ReadModeSpec(ref.hints, jkind)))
        plan.width = offset
        plan.empty_row = [None] * offset
        for idx, (kind, obj, src, on, spec) in enumerate(specs):
            on_fn = None
            if on is not None:
                on_fn = self.binder(sources[: idx + 1]).predicate(on)
            plan.sources.append((kind, obj, src, on_fn, spec))
        base_binder = self.binder(sources)
        if sel.where is not None:
            plan.where = base_binder.predicate(sel.where)
        if plan.sources and plan.sources[0][0] == "table":
            plan.access = choose_access(base_binder, sources[0], plan.sources[0][1], sel.where)
        has_agg = _has_aggregate(sel)
        plan.grouped = bool(sel.group_by) or has_agg or sel.having is not None
        item_binder = self.binder(sources, agg=plan.grouped)
        if plan.grouped:
            plan.group_fns = [base_binder.compile(g).fn for g in sel.group_by]
        names: list[str] = []
        for item in sel.items:
            if item.expr is None:
                if not sources:
                    raise SQLError(263, "Must specify table to select from.", 16)
                if plan.grouped:
                    raise SQLError(
                        8120,
                        f"Column '{sources[0].columns[0].name}' is invalid in the select list "
                        "because it is not contained in either an aggregate function or the GROUP "
                        "BY clause.",
                        16,
                    )
                matched = False
                for src in sources:
                    if item.star_qualifier is not None and src.upper != item.star_qualifier.upper():
                        continue
                    matched = True
                    for i, col in enumerate(src.columns):
                        pos = src.offset + i

                        def star_fn(c: Ctx, r: Any, _p: int = pos) -> Any:
                            return r[_p]

                        plan.items.append(star_fn)
                        plan.types.append(col.type)
                        plan.columns.append(wire_column(col.name, col.type, col.nullable))
                        names.append(col.name)
                if not matched:
                    raise SQLError(
                        4104, f'The multi-part identifier "{item.star_qualifier}" could not be bound.', 16
                    )
                continue
            ce = item_binder.compile(item.expr)
            if item.assign is not None:
                vt = self.var_types[item.assign.index]
                fn = _assign_var_fn(item_binder, ce, vt, item.assign_op, item.assign.index)
                plan.items.append(fn)
                plan.assigns.append((item.assign.index, item.assign_op, vt))
                plan.types.append(vt)
                continue
            plan.items.append(output_fn(ce))
            plan.types.append(ce.type)
            name = (
                item.alias
                if item.alias is not None
                else (item.expr.parts[-1] if isinstance(item.expr, A.Col) else "")
            )
            if isinstance(item.expr, A.Col) and item.alias is None and ce.col is not None:
                name = ce.col[1].name
            names.append(name)
            nullable = ce.col[1].nullable if ce.col is not None else True
            plan.columns.append(wire_column(name, ce.type, nullable))
        if plan.grouped:
            group_cols = set()
            for g in sel.group_by:
                gce = base_binder.compile(g)
                if gce.col is not None:
                    group_cols.add(gce.col[0])
            for pos, colref in item_binder.outside_agg_cols:
                if pos not in group_cols:
                    raise SQLError(
                        8120,
                        f"Column '{'.'.join(colref.parts)}' is invalid in the select list because "
                        "it is not contained in either an aggregate function or the GROUP BY "
                        "clause.",
                        16,
                    )
            if sel.having is not None:
                plan.having = item_binder.predicate(sel.having)
            agg_binder = self.binder(sources)
            for f in item_binder.aggregates:
                arg_fn = None
                arg_t = T_INT
                if f.args:
                    ace = agg_binder.compile(f.args[0])
                    arg_fn = ace.fn
                    arg_t = ace.type
                if f.name in ("SUM", "AVG") and arg_t.kind == "bit":
                    arg_t = T_INT
                plan.aggs.append((f.name, arg_fn, f.distinct, arg_t))
        for oi in sel.order_by:
            e = oi.expr
            if isinstance(e, A.Const) and isinstance(e.value, int) and not isinstance(e.value, bool):
                pos = e.value
                if not 1 <= pos <= len(plan.items):
                    raise SQLError(
                        108,
                        f"The ORDER BY position number {pos} is out of range of the number of "
                        "items in the select list.",
                        15,
                    )

                def pos_fn(c: Ctx, out: Any, _p: int = pos - 1) -> Any:
                    return out[_p]

                plan.order.append((pos_fn, oi.desc, True))
                continue
            if isinstance(e, A.Col) and len(e.parts) == 1:
                up = e.parts[0].upper()
                hits = (
                    [i for i, n in enumerate(names) if n.upper() == up and sel.items[i].alias is not None]
                    if len(names) == len(sel.items)
                    else []
                )
                if hits:

                    def alias_fn(c: Ctx, out: Any, _p: int = hits[0]) -> Any:
                        return out[_p]

                    plan.order.append((alias_fn, oi.desc, True))
                    continue
            if sel.distinct:
                ob = self.binder(sources).compile(e)
                match = None
                for i, item in enumerate(sel.items):
                    if item.expr is not None and isinstance(item.expr, A.Col) and ob.col is not None:
                        ice = self.binder(sources).compile(item.expr)
                        if ice.col is not None and ice.col[0] == ob.col[0]:
                            match = i
                if match is None:
                    raise SQLError(
                        145,
                        "ORDER BY items must appear in the select list if SELECT DISTINCT is specified.",
                        15,
                    )

                def dfn(c: Ctx, out: Any, _p: int = match) -> Any:
                    return out[_p]

                plan.order.append((dfn, oi.desc, True))
                continue
            ob_ce = item_binder.compile(e)
            plan.order.append((ob_ce.fn, oi.desc, False))
        if sel.top is not None:
            plan.top = bind_top(self.binder([]), sel.top)
        plan.distinct = sel.distinct
        return plan


def _assign_var_fn(b: Binder, ce: CE, vt: SqlT, op: str, idx: int) -> Fn:
    conv = var_converter(ce, vt, b, op)

    def fn(c: Ctx, r: Any) -> Any:
        return conv(c, r)

    return fn


def var_converter(ce: CE, vt: SqlT, b: Binder, op: str) -> Fn:
    """Value for SET/SELECT @v [op]= expr, converted to the variable's type (strings truncate silently)."""
    f = ce.fn
    src = ce.type
    if src.kind != "null":
        check_implicit(src, vt)
    need = src.kind != "null" and (src.kind != vt.kind or vt.kind in ("nvarchar", "varchar", "varbinary"))

    def conv(c: Ctx, r: Any) -> Any:
        v = f(c, r)
        if v is None:
            return None
        if need:
            v = convert(v, src, vt)
        return v

    if op == "=":
        return conv
    arith_op = op[0]

    def compound(c: Ctx, r: Any, idx: Any = None) -> Any:
        raise AssertionError("compound handled by caller")

    del compound
    return _compound(conv, arith_op, vt)


def _compound(conv: Fn, op: str, vt: SqlT) -> Fn:
    from .expressions import arith

    holder: list[int] = []
    del holder

    def fn(c: Ctx, r: Any) -> Any:
        raise AssertionError

    del fn

    class Compound:
        def __init__(self) -> None:
            self.index = -1

    def build(c: Ctx, r: Any, current: Any) -> Any:
        v = conv(c, r)
        if current is None or v is None:
            return None
        if vt.kind in STRING_KINDS and op == "+":
            res = current + v
            if vt.length not in (0, MAX):
                res = res[: vt.length]
            return res
        return arith(op, current, v, vt)

    build.compound = True  # type: ignore[attr-defined]
    return build  # type: ignore[return-value]


def _has_aggregate(sel: A.Select) -> bool:
    found = False

    def walk(e: Any) -> None:
        nonlocal found
        if found or e is None:
            return
        if isinstance(e, A.Func) and e.name in ("COUNT", "COUNT_BIG", "MIN", "MAX", "SUM", "AVG"):
            found = True
            return
        if isinstance(e, (A.Select, A.Exists, A.Subquery, A.InSelect)):
            if isinstance(e, A.InSelect):
                walk(e.operand)
            return
        if isinstance(e, A.Expr):
            for v in vars(e).values():
                if isinstance(v, list):
                    for x in v:
                        if isinstance(x, tuple):
                            for y in x:
                                walk(y)
                        else:
                            walk(x)
                elif isinstance(v, A.Expr):
                    walk(v)

    for item in sel.items:
        walk(item.expr)
    walk(sel.having)
    return found


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


class Executor:
    """Statement implementations, called by EngineSession with the engine mutex held."""

    def __init__(self, session: EngineSession) -> None:
        self.session = session

    # ------------------------------------------------------------------ plan cache

    def plan(self, stmt: Any, c: Ctx, build: Callable[[Planner], Any]) -> Any:
        s = self.session
        eng = s.engine
        cached = stmt.plan
        if cached is not None and cached[0] == eng.schema_version and cached[1] == s.database:
            return cached[2]
        p = build(Planner(s, c.batch.var_types))
        stmt.plan = (eng.schema_version, s.database, p)
        return p

    # ------------------------------------------------------------------ SELECT

    def select(self, stmt: A.Select, c: Ctx, events: list[Event]) -> None:
        plan: SelectPlan = self.plan(stmt, c, lambda p: p.select(stmt))
        s = self.session
        if plan.assigns:
            rows = plan.input_rows(c)
            if plan.grouped:
                rows = plan.group(c, rows)
            if plan.order:
                # order matters for the last assignment
                pairs = [((), r) for r in rows]
                for fn, desc, _on_out in reversed(plan.order):
                    pairs.sort(key=lambda p, fn=fn: sort_key(value_key(fn(c, p[1]))), reverse=desc)  # type: ignore[misc]
                rows = [r for _, r in pairs]
            if plan.top is not None:
                n = plan.top(c, None)
                rows = rows[: int(n or 0)]
            for r in rows:
                for fn, (idx, op, _vt) in zip(plan.items, plan.assigns):
                    if op == "=":
                        c.vars[idx] = fn(c, r)
                    else:
                        c.vars[idx] = fn(c, r, c.vars[idx])  # type: ignore[call-arg]
            s.rowcount = len(rows)
            events.append(Done(None if s.nocount else len(rows)))
            return
        out = plan.run(c)
        s.rowcount = len(out)
        events.append(ResultSet(plan.columns, out))
        events.append(Done(None if s.nocount else len(out)))

    # ------------------------------------------------------------------ INSERT

    def build_insert(self, p: Planner, stmt: A.Insert) -> InsertPlan:
        plan = InsertPlan()
        t = require_table(self.session, stmt.table.name)
        check_target_hints(stmt.table.hints, stmt.line)
        plan.table = t
        plan.hints = stmt.table.hints
        if stmt.columns is not None:
            positions = []
            for name in stmt.columns:
                i = t.col_index.get(name.upper())
                if i is None:
                    raise SQLError(207, f"Invalid column name '{name}'.", 16, 1, stmt.line)
                if i in positions:
                    raise _assigned_twice(t.columns[i].name, stmt.line)
                positions.append(i)
        else:
            positions = list(range(len(t.columns)))
        b = p.binder([])
        if stmt.rows is not None:
            for row in stmt.rows:
                if len(row) != len(positions):
                    if stmt.columns is None:
                        raise SQLError(
                            213,
                            "Column name or number of supplied values does not match table definition.",
                            16,
                            1,
                            stmt.line,
                        )
                fns: list[Fn] = []
                given = dict(zip(positions, row))
                for i, col in enumerate(t.columns):
                    e = given.get(i)
                    if e is None:
                        ce = CE(_default_marker, T_NULL)
                    else:
                        ce = b.compile(e)
                    fns.append(make_assign(t, col, ce, "INSERT"))
                plan.rows.append(fns)
        elif stmt.select is not None:
            sp = p.select(stmt.select)
            plan.select = sp
            if len(sp.types) != len(positions):
                raise SQLError(
                    120 if len(sp.types) < len(positions) else 121,
                    "The select list for the INSERT statement contains fewer items than the insert list. "
                    "The number of SELECT values must match the number of INSERT columns."
                    if len(sp.types) < len(positions)
                    else "The select list for the INSERT statement contains more items than the insert list. "
                    "The number of SELECT values must match the number of INSERT columns.",
                    15,
                    1,
                    stmt.line,
                )
            for i, col in enumerate(t.columns):
                if i in positions:
                    j = positions.index(i)

                    def cell(c: Ctx, r: Any, _j: int = j) -> Any:
                        return r[_j]

                    plan.select_assign.append(make_assign(t, col, CE(cell, sp.types[j]), "INSERT"))
                else:
                    plan.select_assign.append(make_assign(t, col, CE(_default_marker, T_NULL), "INSERT"))
        else:
            plan.rows.append(
                [make_assign(t, col, CE(_default_marker, T_NULL), "INSERT") for col in t.columns]
            )
        plan.output, plan.output_columns = bind_output(p, t, stmt.output, True, False)
        return plan

    def insert(self, stmt: A.Insert, c: Ctx, events: list[Event]) -> None:
        plan: InsertPlan = self.plan(stmt, c, lambda p: self.build_insert(p, stmt))
        t = plan.table
        assert t is not None
        if plan.select is not None:
            src_rows = plan.select.run(c)
            new_rows = [[f(c, r) for f in plan.select_assign] for r in src_rows]
        else:
            new_rows = [[f(c, None) for f in fns] for fns in plan.rows]
        self.insert_rows(c, t, new_rows, plan.hints)
        s = self.session
        if plan.output is not None:
            events.append(
                ResultSet(
                    plan.output_columns,
                    output_rows(plan.output, c, [(r, None) for r in new_rows], len(t.columns)),
                )
            )
        s.rowcount = len(new_rows)
        events.append(Done(None if s.nocount else len(new_rows)))

    def insert_rows(self, c: Ctx, t: Table, new_rows: list[Row], hints: list[str]) -> None:
        s = self.session
        locks = c.engine.locks
        sid = s.session_id
        oid = t.object_id
        hs = set(effective_hints(c.engine, hints))
        locks.acquire(sid, ("t", oid), "X" if hs & {"TABLOCK", "TABLOCKX"} else "IX", TXN)
        if t.pk is not None:
            for row in new_rows:
                locks.acquire(sid, ("k", oid, t.pk_lock_key(row)), "X", TXN)
        undo = s.undo
        for row in new_rows:
            rowid = t.insert(row)
            undo.append(("ins", t, rowid))
        if new_rows:
            t.modified = c.now_utc()

    # ------------------------------------------------------------------ UPDATE

    def target_plan(self, p: Planner, stmt: Union[A.Update, A.Delete]) -> tuple[UpdatePlan, Source, Binder]:
        """Start an UPDATE/DELETE plan: the target table (208 if missing), its hints, a binder on its row."""
        plan = UpdatePlan()
        t = require_table(self.session, stmt.table.name)
        check_target_hints(stmt.table.hints, stmt.line)
        plan.table = t
        plan.hints = stmt.table.hints
        src = Source(t.name, t.columns, 0, t, False, t.schema)
        return plan, src, p.binder([src])

    def bind_row_filter(
        self, plan: UpdatePlan, p: Planner, src: Source, b: Binder, stmt: Union[A.Update, A.Delete]
    ) -> UpdatePlan:
        """Finish an UPDATE/DELETE plan: WHERE, access path, TOP and OUTPUT (``inserted.*`` only for UPDATE).

        Bound after UPDATE's SET list, so a statement with several faults reports the same one as before.
        """
        t = plan.table
        assert t is not None
        if stmt.where is not None:
            plan.where = b.predicate(stmt.where)
        plan.access = choose_access(b, src, t, stmt.where)
        if stmt.top is not None:
            plan.top = bind_top(p.binder([]), stmt.top)
        plan.output, plan.output_columns = bind_output(p, t, stmt.output, isinstance(stmt, A.Update), True)
        return plan

    def build_update(self, p: Planner, stmt: A.Update) -> UpdatePlan:
        plan, src, b = self.target_plan(p, stmt)
        t = plan.table
        assert t is not None
        seen: set[int] = set()
        for target, op, e in stmt.sets:
            ce = b.compile(e)
            if isinstance(target, A.Var):
                vt = p.var_types[target.index]
                conv = var_converter(ce, vt, b, op)
                plan.var_sets.append((target.index, (conv, op)))
                continue
            pos, col = b.scope.resolve(target.parts, target.line)
            if pos in seen:
                raise _assigned_twice(col.name, stmt.line)
            seen.add(pos)
            if op != "=":
                ce = b.binary(A.Binary(op[0], A.Col(target.parts, target.line), e))
            plan.sets.append((pos, make_assign(t, col, ce, "UPDATE")))
        return self.bind_row_filter(plan, p, src, b, stmt)

    def update(self, stmt: A.Update, c: Ctx, events: list[Event]) -> None:
        plan: UpdatePlan = self.plan(stmt, c, lambda p: self.build_update(p, stmt))
        t = plan.table
        assert t is not None and plan.access is not None
        top = None
        if plan.top is not None:
            top = plan.top(c, None)
        rows = target_rows(c, t, plan.access, plan.hints, plan.where, top)
        changes: list[tuple[int, Row]] = []
        for rid, row in rows:
            new = list(row)
            for pos, fn in plan.sets:
                new[pos] = fn(c, row)
            for idx, (conv, op) in plan.var_sets:
                if op == "=":
                    c.vars[idx] = conv(c, row)
                else:
                    c.vars[idx] = conv(c, row, c.vars[idx])
            changes.append((rid, new))
        s = self.session
        if changes:
            locks = c.engine.locks
            if t.pk is not None:
                for _rid, new in changes:
                    locks.acquire(s.session_id, ("k", t.object_id, t.pk_lock_key(new)), "X", TXN)
            old = t.update_many(changes)
            s.undo.append(("upd", t, [(rid, o) for (rid, _), o in zip(changes, old)]))
            t.modified = c.now_utc()
        if plan.output is not None:
            events.append(
                ResultSet(
                    plan.output_columns,
                    output_rows(
                        plan.output,
                        c,
                        [(new, old_row) for (_, new), (_, old_row) in zip(changes, rows)],
                        len(t.columns),
                    ),
                )
            )
        s.rowcount = len(changes)
        events.append(Done(None if s.nocount else len(changes)))

    # ------------------------------------------------------------------ DELETE

    def build_delete(self, p: Planner, stmt: A.Delete) -> UpdatePlan:
        plan, src, b = self.target_plan(p, stmt)
        return self.bind_row_filter(plan, p, src, b, stmt)

    def delete(self, stmt: A.Delete, c: Ctx, events: list[Event]) -> None:
        plan: UpdatePlan = self.plan(stmt, c, lambda p: self.build_delete(p, stmt))
        t = plan.table
        assert t is not None and plan.access is not None
        top = None
        if plan.top is not None:
            top = plan.top(c, None)
        rows = target_rows(c, t, plan.access, plan.hints, plan.where, top) if top != 0 else []
        s = self.session
        undo = s.undo
        for rid, _row in rows:
            old = t.delete(rid)
            undo.append(("del", t, rid, old))
        if rows:
            t.modified = c.now_utc()
        if plan.output is not None:
            events.append(
                ResultSet(
                    plan.output_columns,
                    output_rows(plan.output, c, [(None, r) for _, r in rows], len(t.columns)),
                )
            )
        s.rowcount = len(rows)
        events.append(Done(None if s.nocount else len(rows)))

    # ------------------------------------------------------------------ MERGE

    def build_merge(self, p: Planner, stmt: A.Merge) -> MergePlan:
        plan = MergePlan()
        t = require_table(self.session, stmt.target.name)
        check_target_hints(stmt.target.hints, stmt.line)
        plan.table = t
        plan.hints = stmt.target.hints
        plan.source_hints = stmt.source.hints
        tw = len(t.columns)
        tsrc = Source(stmt.target.alias or t.name, t.columns, 0, t, stmt.target.alias is not None, t.schema)
        kind, obj, ssrc = p.source_for(stmt.source, tw)
        if ssrc.upper == tsrc.upper:
            raise SQLError(
                5101 if False else 1013,
                f'The objects "{tsrc.name}" and "{ssrc.name}" in the FROM '
                "clause have the same exposed names. Use correlation names to "
                "distinguish them.",
                16,
                1,
                stmt.line,
            )
        plan.source_kind = kind
        plan.source_obj = obj
        plan.source_width = len(ssrc.columns)
        b = p.binder([tsrc, ssrc])
        plan.on = b.predicate(stmt.on)
        # point lookup: target PK column = expression over the source only
        if t.pk is not None:
            eqs: dict[int, Fn] = {}
            for cj in _conjuncts(stmt.on):
                if isinstance(cj, A.Compare) and cj.op == "=":
                    left = b.compile(cj.left)
                    right = b.compile(cj.right)
                    for a, o in ((left, right), (right, left)):
                        if a.col is not None and a.col[0] < tw and (o.col is None or o.col[0] >= tw):
                            uses_target = _uses_target(o, tw)
                            if uses_target:
                                continue
                            if o.type.kind in _PREC_OK.get(a.col[1].type.kind, set()):
                                f = o.fn
                                src_t = o.type
                                dst_t = a.col[1].type
                                if src_t.kind != dst_t.kind and not (src_t.is_string and dst_t.is_string):

                                    def conv(
                                        c: Ctx, r: Any, f: Fn = f, s_: SqlT = src_t, d_: SqlT = dst_t
                                    ) -> Any:
                                        v = f(c, r)
                                        return None if v is None else convert(v, s_, d_)

                                    eqs.setdefault(a.col[0], conv)
                                else:
                                    eqs.setdefault(a.col[0], f)
                            break
            if all(ci in eqs for ci, _ in t.pk.columns):
                plan.point = [eqs[ci] for ci, _ in t.pk.columns]
        for w in stmt.whens:
            cond = b.predicate(w.condition) if w.condition is not None else None
            sets: list[tuple[int, Fn]] = []
            ins: list[tuple[int, Fn]] = []
            if w.action == "UPDATE":
                seen: set[int] = set()
                for target, op, e in w.sets:
                    ce = b.compile(e)
                    pos, col = Scope([tsrc]).resolve(target.parts, target.line)
                    if pos >= tw:
                        raise SQLError(
                            4104,
                            f'The multi-part identifier "{".".join(target.parts)}" could not be bound.',
                            16,
                            1,
                            stmt.line,
                        )
                    if pos in seen:
                        raise _assigned_twice(col.name, stmt.line)
                    seen.add(pos)
                    if op != "=":
                        ce = b.binary(A.Binary(op[0], A.Col(target.parts, target.line), e))
                    sets.append((pos, make_assign(t, col, ce, "UPDATE")))
            elif w.action == "INSERT":
                sb = p.binder([Source(ssrc.name, ssrc.columns, tw, None, True)] if True else [])
                if w.columns is not None:
                    positions = []
                    for n in w.columns:
                        i = t.col_index.get(n.upper())
                        if i is None:
                            raise SQLError(207, f"Invalid column name '{n}'.", 16, 1, stmt.line)
                        positions.append(i)
                else:
                    positions = list(range(tw))
                    if not w.default_values and len(w.values) != tw:
                        raise SQLError(
                            213,
                            "Column name or number of supplied values does not match table definition.",
                            16,
                            1,
                            stmt.line,
                        )
                given = dict(zip(positions, w.values))
                for i, col in enumerate(t.columns):
                    e2 = given.get(i)
                    ce = CE(_default_marker, T_NULL) if e2 is None else sb.compile(e2)
                    ins.append((i, make_assign(t, col, ce, "INSERT")))
            plan.whens.append((w, cond, sets, ins))
        if stmt.top is not None:
            plan.top = bind_top(p.binder([]), stmt.top)
        plan.output, plan.output_columns = bind_output(p, t, stmt.output, True, True)
        return plan

    def merge(self, stmt: A.Merge, c: Ctx, events: list[Event]) -> None:
        plan: MergePlan = self.plan(stmt, c, lambda p: self.build_merge(p, stmt))
        t = plan.table
        assert t is not None and plan.on is not None
        s = self.session
        sid = s.session_id
        locks = c.engine.locks
        oid = t.object_id
        tw = len(t.columns)
        hs = set(plan.hints)
        serializable = bool(hs & {"HOLDLOCK", "SERIALIZABLE"}) or s.isolation == "SERIALIZABLE"
        # source rows
        if plan.source_kind == "table":
            got, _ = read_table(
                c, plan.source_obj, Access("scan", [], []),
                ReadMode(plan.source_hints, s.isolation, rcsi=c.engine.profile.read_committed_snapshot),
            )
            src_rows = [r for _, r in got]
        elif plan.source_kind == "view":
            src_rows = plan.source_obj(c)
        elif plan.source_kind == "derived":
            src_rows = [list(r) for r in plan.source_obj.run(c)]
        else:
            src_rows = [[f(c, None) for f in fns] for fns in plan.source_obj]
        locks.acquire(sid, ("t", oid), "X" if hs & {"TABLOCK", "TABLOCKX"} else "IX", TXN)
        if plan.point is None:
            if serializable:
                locks.acquire(sid, ("t", oid), "U", TXN)
            else:
                _locked, first = locks.scan_conflicts(sid, oid, "U")
                if first is not None:
                    raise first
        top = None
        if plan.top is not None:
            top = plan.top(c, None)
        touched: set[int] = set()
        matched_targets: set[int] = set()
        actions: list[tuple[str, Optional[int], Optional[Row], Optional[Row]]] = []
        nulls_t = [None] * tw
        count = 0
        for srow in src_rows:
            if top is not None and count >= top:
                break
            if plan.point is not None:
                vals = [f(c, nulls_t + srow) for f in plan.point]
                pk = t.pk
                assert pk is not None
                if any(v is None for v in vals):
                    cands: list[tuple[int, Row]] = []
                else:
                    key = pk.keyfn(_key_row(t, pk, vals))
                    res = ("k", oid, key)
                    locks.acquire(sid, res, "U", TXN if serializable else STMT)
                    rid = pk.umap.get(key)
                    cands = [(rid, t.rows[rid])] if rid is not None else []
            else:
                cands = list(t.rows.items())
            matches = [(rid, row) for rid, row in cands if plan.on(c, row + srow) is True]
            if len(matches) > 1 or any(rid in touched for rid, _ in matches):
                raise SQLError(
                    8672,
                    "The MERGE statement attempted to UPDATE or DELETE the same row more than once. "
                    "This happens when a target row matches more than one source row. A MERGE "
                    "statement cannot UPDATE/DELETE the same row of the target table multiple times. "
                    "Refine the ON clause to ensure a target row matches at most one source row, or "
                    "use the GROUP BY clause to group the source rows.",
                    16,
                    1,
                    stmt.line,
                )
            if matches:
                rid, row = matches[0]
                matched_targets.add(rid)
                combo = row + srow
                for w, cond, sets, _ins in plan.whens:
                    if not w.matched:
                        continue
                    if cond is not None and cond(c, combo) is not True:
                        continue
                    locks.acquire(sid, ("k", oid, lock_key(t, row, rid)), "X", TXN)
                    touched.add(rid)
                    actions.append(_merge_row_action(w, rid, row, sets, c, combo))
                    count += 1
                    break
            else:
                combo = nulls_t + srow
                for w, cond, _sets, ins in plan.whens:
                    if w.matched or w.by_source:
                        continue
                    if cond is not None and cond(c, combo) is not True:
                        continue
                    new = [fn(c, combo) for _, fn in ins]
                    if t.pk is not None:
                        locks.acquire(sid, ("k", oid, t.pk_lock_key(new)), "X", TXN)
                    actions.append(("INSERT", None, new, None))
                    count += 1
                    break
        if any(w.by_source for w in stmt.whens):
            nulls_s = [None] * plan.source_width
            for rid, row in list(t.rows.items()):
                if rid in matched_targets:
                    continue
                if top is not None and count >= top:
                    break
                combo = row + nulls_s
                for w, cond, sets, _ins in plan.whens:
                    if not w.by_source:
                        continue
                    if cond is not None and cond(c, combo) is not True:
                        continue
                    locks.acquire(sid, ("k", oid, lock_key(t, row, rid)), "X", TXN)
                    actions.append(_merge_row_action(w, rid, row, sets, c, combo))
                    count += 1
                    break
        undo = s.undo
        updates = [(rid, new) for a, rid, new, _old in actions if a == "UPDATE"]
        if updates:
            old_rows = t.update_many(updates)  # type: ignore[arg-type]
            undo.append(("upd", t, [(rid, o) for (rid, _), o in zip(updates, old_rows)]))
        for a, rid, _new, _old in actions:
            if a == "DELETE":
                assert rid is not None
                undo.append(("del", t, rid, t.delete(rid)))
        for a, _rid, new_row, _old in actions:
            if a == "INSERT":
                assert new_row is not None
                undo.append(("ins", t, t.insert(new_row)))
        if actions:
            t.modified = c.now_utc()
        if plan.output is not None:
            events.append(
                ResultSet(
                    plan.output_columns,
                    output_rows(plan.output, c, [(new, old) for _, _, new, old in actions], tw),
                )
            )
        s.rowcount = len(actions)
        events.append(Done(None if s.nocount else len(actions)))


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


def bind_top(b: Binder, e: A.Expr) -> Fn:
    """TOP (n): an integer expression (strings convert; float is 1060), evaluated to a non-negative int."""
    ce = b.compile(e)
    if ce.type.kind == "float":
        raise SQLError(
            1060,
            "The number of rows provided for a TOP or FETCH clauses row count parameter must be an integer.",
            15,
        )
    f = b.coerce(ce, SqlT("bigint"))

    def top(c: Ctx, r: Any) -> Any:
        v = f(c, r)
        if v is None or v < 0:
            raise SQLError(
                1060,
                "The number of rows provided for a TOP or FETCH clauses row count parameter must "
                "be an integer.",
                16,
            )
        return int(v)

    return top


def _default_marker(c: Ctx, r: Any) -> Any:
    return DEFAULT


__all__ = ["Ctx", "Executor", "Planner", "SelectPlan", "wire_column"]
_ = (Union, TXN, LockConflict)
