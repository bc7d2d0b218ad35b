"""SELECT: the Planner binds a query to table sources, access paths and compiled expressions; a
SelectPlan runs it (WHERE, joins, GROUP BY/aggregates, ORDER BY, TOP). Also variable assignment."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from ..results import MAX, Column, SQLError
from . import ast as A
from .access import Access, ReadMode, choose_access, read_table
from .catalog import lookup_view, view_rows
from .compiled import CE, Fn
from .context import Ctx, Row, output_fn, require_table, resolve_db, wire_column
from .expressions import Binder, Scope, Source
from .storage import ColumnInfo, sort_key
from .types import INTEGER_KINDS, STRING_KINDS, T_INT, T_NULL, SqlT, check_implicit, convert, value_key
from .versions import effective_hints

if TYPE_CHECKING:
    from . import EngineSession


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
