"""Binds statements to plans and runs them: SELECT, INSERT, UPDATE, DELETE, MERGE (reads, writes, locking,
undo). DDL, EXEC and the other statements run in the session layers (session.py).

Each statement runs with the engine mutex held. Locks are requested *before* rows are modified; a
request that conflicts raises ``LockConflict``, the session undoes whatever the statement changed,
waits, and runs the statement again from scratch.

Layers, one file each: context (Ctx, shared helpers) -> access (seek/scan, read modes) -> query
(Planner, SELECT) -> dml (write plans) -> this file (the Executor, one method per statement kind).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from ..results import Done, Event, ResultSet, SQLError
from . import ast as A
from .access import _PREC_OK, Access, ReadMode, _conjuncts, choose_access, read_table
from .compiled import CE, Fn
from .context import Ctx, Row, lock_key, make_assign, require_table, wire_column
from .dml import (
    InsertPlan,
    MergePlan,
    UpdatePlan,
    _assigned_twice,
    _default_marker,
    _key_row,
    _merge_row_action,
    _uses_target,
    bind_output,
    check_target_hints,
    output_rows,
    target_rows,
)
from .expressions import Binder, Scope, Source
from .locks import STMT, TXN, LockConflict
from .query import Planner, SelectPlan, bind_top, var_converter
from .storage import Table, sort_key
from .types import T_NULL, SqlT, convert, value_key
from .versions import effective_hints

if TYPE_CHECKING:
    from . import EngineSession


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


__all__ = ["Ctx", "Executor", "Planner", "SelectPlan", "wire_column"]
_ = (Union, TXN, LockConflict)
