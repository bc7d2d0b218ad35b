"""One batch run, statement by statement: control flow, the atomic statement runner (locks, lock
waits, statement rollback, error semantics: which errors abort the batch or the transaction), and
the plain statements (SET, DECLARE, transactions, USE, PRINT). EXEC and DDL come from the
run_procedures and run_ddl layers."""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

from ..profiles import BABELFISH_UNMAPPED
from ..results import DatabaseChanged, Done, Message, SQLError
from . import ast as A
from .dialect import restate
from .expressions import Binder, Scope
from .locks import STMT, TXN, LockConflict
from .query import Planner, var_converter
from .run_base import (
    BATCH_ABORT,
    ROLLBACK_ABORT,
    Cancelled,
    _BatchAbort,
    _Break,
    _Continue,
    _int_param,
    _Return,
)
from .run_ddl import DdlStatements
from .run_procedures import ProcedureStatements

_IMPLICIT_TXN_STATEMENTS = (
    A.Select,
    A.Insert,
    A.Update,
    A.Delete,
    A.Merge,
    A.CreateTable,
    A.DropTable,
    A.CreateIndex,
    A.DropIndex,
    A.Truncate,
)


class _Run(ProcedureStatements, DdlStatements):
    """One batch execution: walks statements, applies error semantics."""

    def block(self, stmts: list[A.Stmt]) -> None:
        for st in stmts:
            self.statement(st)

    def statement(self, st: A.Stmt) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled()
        t = type(st)
        if t is A.Block:
            assert isinstance(st, A.Block)
            self.block(st.body)
            return
        if t is A.If:
            assert isinstance(st, A.If)
            cond = self.atomic(st, self.eval_condition)
            if cond is None:
                return  # the condition raised a statement-level error
            if cond:
                self.statement(st.then)
            elif st.else_ is not None:
                self.statement(st.else_)
            return
        if t is A.While:
            assert isinstance(st, A.While)
            while True:
                cond = self.atomic(st, self.eval_condition)
                if not cond:
                    return
                try:
                    self.statement(st.body)
                except _Break:
                    return
                except _Continue:
                    continue
        if t is A.Break:
            raise _Break()
        if t is A.Continue:
            raise _Continue()
        if t is A.Return:
            raise _Return()
        self.atomic(st, self.run_leaf)

    # ------------------------------------------------------------------ atomic statement runner

    def atomic(self, st: A.Stmt, body: Any) -> Any:
        s = self.s
        eng = s.engine
        hooks = eng.hooks
        try:
            if hooks is not None:
                hooks.before_statement(s, self.stmt_text(st))
            with eng.mutex:
                return self._locked(st, body)
        except SQLError as e:
            self.handle_error(st, e)
            return None

    def _locked(self, st: A.Stmt, body: Any) -> Any:
        s = self.s
        eng = s.engine
        started: Optional[float] = None
        if (
            s.implicit_transactions
            and s.trancount == 0
            and isinstance(st, _IMPLICIT_TXN_STATEMENTS)
            and not (isinstance(st, A.Select) and st.from_ is None)
        ):
            s.trancount = 1
        while True:
            mark = len(s.undo)
            n_events = len(self.events)
            self.ctx.t = None
            try:
                result = body(st)
            except LockConflict as lc:
                s.undo_to(mark)
                del self.events[n_events:]
                eng.locks.release(s.session_id, STMT)
                if s.trancount == 0:
                    eng.locks.release(s.session_id, TXN)
                now = time.monotonic()
                if started is None:
                    started = now
                if eng.locks.would_deadlock(s.session_id, lc.blockers):
                    eng.locks.waits.pop(s.session_id, None)
                    raise SQLError(
                        1205,
                        f"Transaction (Process ID {s.session_id}) was deadlocked on lock resources "
                        "with another process and has been chosen as the deadlock victim. Rerun "
                        "the transaction.",
                        13,
                        51,
                    ) from None
                timeout = 0 if _has_nowait(st) else s.lock_timeout
                if timeout >= 0 and (now - started) * 1000 >= timeout:
                    eng.locks.waits.pop(s.session_id, None)
                    raise SQLError(1222, "Lock request time out period exceeded.", 16, 56) from None
                eng.locks.waits[s.session_id] = lc.blockers
                wait = 0.05
                if timeout >= 0:
                    wait = max(0.001, min(wait, timeout / 1000 - (now - started)))
                eng.cond.wait(wait)
                eng.locks.waits.pop(s.session_id, None)
                if self.cancel is not None and self.cancel.is_set():
                    raise Cancelled() from None
                continue
            except SQLError:
                s.undo_to(mark)
                self.end_statement(ok=False)
                raise
            except Cancelled:
                s.undo_to(mark)
                self.end_statement(ok=False)
                raise
            except (_Break, _Continue, _Return):
                raise
            except BaseException:
                s.undo_to(mark)
                self.end_statement(ok=False)
                raise
            self.end_statement(ok=True)
            return result

    def end_statement(self, ok: bool) -> None:
        s = self.s
        eng = s.engine
        locks = eng.locks
        released = locks.release(s.session_id, STMT)
        if s.trancount == 0:
            if s.undo:
                eng.dirty = True
                s.undo.clear()
            if locks.has_locks(s.session_id):  # SET, BEGIN/COMMIT...: autocommit with nothing held
                released = locks.release(s.session_id, TXN) or released
                released = locks.release_resource_kind(s.session_id, "a", TXN) or released
        if released:
            eng.cond.notify_all()

    def handle_error(self, st: A.Stmt, e: SQLError) -> None:
        s = self.s
        if e.line == 1 or e.number not in (102, 156, 105):
            e.line = st.line
        shown = restate(s.engine.profile, e)  # in another engine's words (profiles.py); usually e itself
        self.events.append(shown.to_message())
        self.events.append(Done(error=True))
        s.last_error = shown.number
        n = e.number
        # Babelfish: an error it cannot map to a SQL Server number ends the batch and rolls back
        # (https://docs.aws.amazon.com/AmazonRDS/latest/AuroraUserGuide/babelfish-strict.html).
        if n in ROLLBACK_ABORT or (shown is not e and shown.number == BABELFISH_UNMAPPED):
            with s.engine.cond:
                if s.trancount:
                    s.rollback_all()
            raise _BatchAbort()
        if getattr(e, "raiserror", False):
            return
        if s.xact_abort and e.severity > 10:
            with s.engine.cond:
                if s.trancount:
                    s.rollback_all()
            raise _BatchAbort()
        if n in BATCH_ABORT or getattr(e, "batch_abort", False):
            raise _BatchAbort()

    # ------------------------------------------------------------------ statement bodies

    def eval_condition(self, st: Any) -> bool:
        c = self.ctx
        cached = getattr(st, "_cond_plan", None)
        eng = self.s.engine
        if cached is not None and cached[0] == eng.schema_version and cached[1] == self.s.database:
            fn = cached[2]
        else:
            planner = Planner(self.s, c.batch.var_types)
            fn = Binder(Scope([]), c.batch.var_types, planner.subquery).predicate(st.cond)
            st._cond_plan = (eng.schema_version, self.s.database, fn)
        return fn(c, None) is True

    def run_leaf(self, st: A.Stmt) -> None:
        handler = _LEAF_HANDLERS.get(type(st))  # one dict lookup, not a chain of type tests
        if handler is None:  # pragma: no cover
            raise SQLError(102, f"Incorrect syntax near '{type(st).__name__}'.", 15)
        handler(self, st)

    def print_(self, st: A.Print) -> None:
        v = self.scalar(st, st.expr)
        self.events.append(Message(0, 0, 1, "" if v is None else str(v), st.line))

    def scalar(self, st: Any, e: A.Expr) -> Any:
        c = self.ctx
        planner = Planner(self.s, c.batch.var_types)
        ce = Binder(Scope([]), c.batch.var_types, planner.subquery).compile(e)
        return ce.fn(c, None)

    def set_option(self, st: A.SetOption) -> None:
        s = self.s
        for name in st.names:
            if name == "NOCOUNT":
                s.nocount = st.value == "ON"
            elif name == "XACT_ABORT":
                s.xact_abort = st.value == "ON"
            elif name == "IMPLICIT_TRANSACTIONS":
                s.implicit_transactions = st.value == "ON"
            elif name == "ISOLATION":
                s.isolation = str(st.value)
            elif name in ("LOCK_TIMEOUT", "TEXTSIZE", "ROWCOUNT", "DATEFIRST"):
                v = self.scalar(st, st.value)
                if name == "LOCK_TIMEOUT":
                    s.lock_timeout = _int_param(v) if v is not None else -1
                elif name == "TEXTSIZE":
                    s.textsize = _int_param(v) if v is not None else 2147483647
                elif name == "ROWCOUNT" and v not in (0, None):
                    raise SQLError(
                        102,
                        "Incorrect syntax near 'ROWCOUNT'. (The SQL Server stand-in does not "
                        "support SET ROWCOUNT other than 0.)",
                        15,
                    )
                elif name == "DATEFIRST" and v != 7:
                    raise SQLError(
                        102,
                        "Incorrect syntax near 'DATEFIRST'. (The SQL Server stand-in does not "
                        "support SET DATEFIRST other than 7.)",
                        15,
                    )
        s.rowcount = 0
        self.events.append(Done(None))

    def set_var(self, st: A.SetVar) -> None:
        c = self.ctx
        planner = Planner(self.s, c.batch.var_types)
        b = Binder(Scope([]), c.batch.var_types, planner.subquery)
        ce = b.compile(st.expr)
        vt = c.batch.var_types[st.var.index]
        conv = var_converter(ce, vt, b, st.op)
        if st.op == "=":
            c.vars[st.var.index] = conv(c, None)
        else:
            c.vars[st.var.index] = conv(c, None, c.vars[st.var.index])  # type: ignore[call-arg]
        self.s.rowcount = 1
        self.events.append(Done(None))

    def declare(self, st: A.Declare) -> None:
        c = self.ctx
        for item in st.items:
            c.vars[item.var.index] = None
            if item.init is not None:
                planner = Planner(self.s, c.batch.var_types)
                b = Binder(Scope([]), c.batch.var_types, planner.subquery)
                ce = b.compile(item.init)
                c.vars[item.var.index] = var_converter(ce, item.type, b, "=")(c, None)
        self.events.append(Done(None))

    def tran(self, st: A.TranStmt) -> None:
        s = self.s
        name = st.name
        if st.name_expr is not None:
            v = self.scalar(st, st.name_expr)
            name = None if v is None else str(v)
        kind = st.kind
        if kind == "BEGIN":
            if s.trancount == 0:
                s.tran_name = name
            s.trancount += 1
        elif kind == "COMMIT":
            if s.trancount == 0:
                raise SQLError(
                    3902, "The COMMIT TRANSACTION request has no corresponding BEGIN TRANSACTION.", 16, 1
                )
            s.trancount -= 1
            if s.trancount == 0:
                s.commit_all()
        elif kind == "ROLLBACK":
            if s.trancount == 0:
                raise SQLError(
                    3903, "The ROLLBACK TRANSACTION request has no corresponding BEGIN TRANSACTION.", 16, 1
                )
            if name is not None and not (s.tran_name is not None and s.tran_name.upper() == name.upper()):
                pos = s.savepoints.get(name.upper())
                if pos is None:
                    raise SQLError(
                        6401,
                        f"Cannot roll back {name}. No transaction or savepoint of that name was found.",
                        16,
                        1,
                    )
                s.undo_to(pos)
                s.savepoints[name.upper()] = pos
            else:
                s.rollback_all()
        elif kind == "SAVE":
            if s.trancount == 0:
                raise SQLError(
                    628, "Cannot issue SAVE TRANSACTION when there is no active transaction.", 16, 1
                )
            assert name is not None
            s.savepoints[name.upper()] = len(s.undo)
        s.rowcount = 0
        self.events.append(Done(None))

    def use(self, st: A.Use) -> None:
        s = self.s
        db = s.engine.database_named(st.database)
        if db is None:
            raise SQLError(
                911,
                f"Database '{st.database}' does not exist. Make sure that the name is entered correctly.",
                16,
                1,
            )
        old = s.database
        s.database = db.name
        self.events.append(DatabaseChanged(db.name, old))
        self.events.append(Message(5701, 0, 1, f"Changed database context to '{db.name}'.", st.line))
        self.events.append(Done(None))


_LEAF_HANDLERS: dict[type, Callable[[_Run, Any], None]] = {
    A.Select: lambda r, st: r.s.executor.select(st, r.ctx, r.events),
    A.Update: lambda r, st: r.s.executor.update(st, r.ctx, r.events),
    A.Insert: lambda r, st: r.s.executor.insert(st, r.ctx, r.events),
    A.Delete: lambda r, st: r.s.executor.delete(st, r.ctx, r.events),
    A.Merge: lambda r, st: r.s.executor.merge(st, r.ctx, r.events),
    A.SetOption: _Run.set_option,
    A.SetVar: _Run.set_var,
    A.Declare: _Run.declare,
    A.TranStmt: _Run.tran,
    A.Exec: _Run.exec_,
    A.Use: _Run.use,
    A.CreateTable: _Run.create_table,
    A.DropTable: _Run.drop_table,
    A.CreateIndex: _Run.create_index,
    A.DropIndex: _Run.drop_index,
    A.Truncate: _Run.truncate,
    A.Print: _Run.print_,
    A.Raiserror: _Run.raiserror,
    A.Throw: _Run.throw,
}


def _has_nowait(st: A.Stmt) -> bool:
    """WITH (NOWAIT) on any table of the statement: a lock wait fails at once with 1222."""
    refs: list[A.TableRef] = []
    if isinstance(st, A.Select):
        if st.from_ is not None:
            refs.append(st.from_)
        refs.extend(j.table for j in st.joins)
    elif isinstance(st, (A.Insert, A.Update, A.Delete)):
        refs.append(st.table)
    elif isinstance(st, A.Merge):
        refs.extend((st.target, st.source))
    return any("NOWAIT" in r.hints for r in refs)
