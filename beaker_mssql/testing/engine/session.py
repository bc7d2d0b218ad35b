"""EngineSession: runs batches statement by statement with SQL Server's error, transaction and lock
semantics."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol

from ..profiles import BABELFISH_UNMAPPED, clip_utf8
from ..results import MAX, DatabaseChanged, Done, Event, Message, ResultSet, SQLError
from . import ast as A
from .context import Ctx, find_table, require_table, resolve_db
from .dialect import refused_batch, refused_statements, restate
from .executor import Executor
from .expressions import Binder, Scope
from .lexer import MARKER_RE, scan_literals
from .locks import SESSION, STMT, TXN, LockConflict
from .parser import parse
from .query import Planner, var_converter
from .storage import ColumnInfo, Index, Table
from .types import T_INT, SqlT, check_implicit, convert

if TYPE_CHECKING:
    from . import Engine


class Cancelled(Exception):
    """The client cancelled the request (attention) while the batch was running or waiting."""


class CancelFlag(Protocol):
    """The ``cancel`` argument of EngineSession.execute: only is_set() is used (a threading.Event fits;
    the TDS server passes a flag that also peeks at the client's socket)."""

    def is_set(self) -> bool: ...


BindHook = Callable[[A.Batch, Ctx], int]


class _BatchAbort(Exception):
    pass


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _Return(Exception):
    pass


# Errors that abort the batch even without XACT_ABORT (the open transaction stays open).
BATCH_ABORT = frozenset(
    {
        208,
        207,
        209,
        4104,
        245,
        241,
        242,
        8114,
        257,
        529,
        8115,
        8134,
        517,
        535,
        8116,
        8117,
        402,
        1013,
        213,
        8120,
        512,
        116,
        156,
        102,
        137,
        4145,
    }
)
# Errors that also roll back the transaction.
ROLLBACK_ABORT = frozenset({1205})

_APPLOCK_MODES = {
    "SHARED": "S",
    "UPDATE": "U",
    "EXCLUSIVE": "X",
    "INTENTSHARED": "IS",
    "INTENTEXCLUSIVE": "IX",
}


class EngineSession:
    def __init__(self, engine: Engine, session_id: int, database: str, login: str) -> None:
        self.engine = engine
        self.session_id = session_id
        self.database = database
        self.login_database = database
        self.login = login
        self.trancount = 0
        self.rowcount = 0
        self.last_error = 0
        self._default_options()
        self.undo: list[tuple[Any, ...]] = []
        self.savepoints: dict[str, int] = {}
        self.tran_name: Optional[str] = None
        self.last_tran_end = ""  # 'commit' / 'rollback': how the last transaction ended (TDS ENVCHANGE 9/10)
        self.closed = False
        self.cancel: Optional[CancelFlag] = None
        self.executor = Executor(self)

    def _default_options(self) -> None:
        """SET options as a new login (or a RESETCONNECTION) has them."""
        self.nocount = False
        self.xact_abort = False
        self.implicit_transactions = False
        self.lock_timeout = -1
        self.textsize = 2147483647
        self.isolation = "READ COMMITTED"

    def __repr__(self) -> str:
        return f"<EngineSession spid={self.session_id} db={self.database!r} trancount={self.trancount}>"

    # ------------------------------------------------------------------ public API

    def execute(
        self, batch: str, cancel: Optional[CancelFlag] = None, bind: Optional[BindHook] = None
    ) -> list[Event]:
        """Run a batch; SQL errors become Message + Done(error=True) events.

        ``bind`` is how RPC parameters get in (testing/rpc.py): it is called with the parsed batch and
        its Ctx before anything runs, sets variables, and returns how many leading statements (the
        parameter declarations) to skip. Everything else is the batch path itself.
        """
        if self.closed:
            raise RuntimeError("session is closed")
        events: list[Event] = []
        eng = self.engine
        self.cancel = cancel
        profile = eng.profile
        try:
            key, values, raws = scan_literals(batch)
            if not (profile.create_or_alter and profile.bracket_escapes):
                refused = refused_batch(profile, key)
                if refused is not None:
                    raise refused
            parsed = eng.parse_cache.get(key)
            if parsed is None or any(values[slot] != v for slot, v in parsed[1]):
                parsed = parse(key, values)
                if len(eng.parse_cache) > 5000:
                    eng.parse_cache.clear()
                eng.parse_cache[key] = parsed
        except SQLError as e:
            self.last_error = e.number
            return [e.to_message(), Done(error=True)]
        ast_batch = parsed[0]
        if not profile.merge:
            refused = refused_statements(profile, ast_batch.statements)
            if refused is not None:
                self.last_error = refused.number
                return [refused.to_message(), Done(error=True)]
        ctx = Ctx(self, values, ast_batch)
        run = _Run(self, ctx, key, raws, events, cancel)
        statements = ast_batch.statements
        if bind is not None:
            try:
                skip = bind(ast_batch, ctx)
            except SQLError as e:
                self.last_error = e.number
                return [e.to_message(), Done(error=True)]
            statements = statements[skip:]
        with eng.mutex:
            stamp = (eng.schema_version, self.database)
            if ast_batch.prebound != stamp:
                try:
                    self._prebind(ast_batch.statements, ctx)
                except SQLError as e:
                    self.last_error = e.number
                    return [e.to_message(), Done(error=True)]
                ast_batch.prebound = stamp
        try:
            run.block(statements)
        except Cancelled:
            # An attention ends the batch (the statement in progress is rolled back); the open
            # transaction is rolled back too only under SET XACT_ABORT ON, and otherwise stays open
            # with its locks. Sources: https://dba.stackexchange.com/a/338856 ("The only thing
            # XACT_ABORT affects is whether any open transaction is rolled back or not") and
            # https://dba.stackexchange.com/questions/10912 (client timeout, XACT_ABORT ON clears
            # transactions and locks), matching the "XACT_ABORT and Query Timeout" tests at
            # https://sqlchitchat.com/admin/datalayer/xactabort/.
            if self.xact_abort and self.trancount > 0:
                with eng.cond:
                    self.rollback_all()
            raise
        except (_BatchAbort, _Return):
            pass
        except (_Break, _Continue):  # pragma: no cover - parser forbids them outside loops
            pass
        finally:
            self.cancel = None
            eng.after_batch()
        return events

    def reset(self, keep_transaction: bool = False) -> None:
        """sp_reset_connection (the RESETCONNECTION bit of a pooled client's next request): roll back
        (unless RESETCONNECTIONSKIPTRAN), release session applocks, SET options and database back to
        the login's. [MS-TDS] 2.2.3.1.2; what is reset: the sp_reset_connection notes in SQL Server's docs.
        """
        eng = self.engine
        with eng.cond:
            if self.trancount and not keep_transaction:
                self.rollback_all()
            if eng.locks.release_resource_kind(self.session_id, "a", SESSION):
                eng.cond.notify_all()
        self._default_options()
        self.database = self.login_database
        self.rowcount = 0
        self.last_error = 0
        eng.after_batch()

    def close(self) -> None:
        """Disconnect: roll back any open transaction and release every lock (applocks included)."""
        eng = self.engine
        with eng.cond:
            if self.closed:
                return
            if self.trancount:
                self.rollback_all()
            eng.locks.release(self.session_id, SESSION)
            eng.locks.waits.pop(self.session_id, None)
            self.closed = True
            eng.sessions.pop(self.session_id, None)
            eng.cond.notify_all()
        eng.after_batch()

    # ------------------------------------------------------------------ compile-time checks

    def _prebind(self, stmts: list[A.Stmt], ctx: Ctx) -> bool:
        """Bind statements whose tables exist now: a 207 there fails the whole batch, as in SQL Server
        (which compiles every statement of the batch, IF/WHILE bodies included, before running any).
        Returns True once a DDL statement is met: what follows may depend on it (deferred resolution)."""
        for st in stmts:
            if isinstance(st, (A.Select, A.Insert, A.Update, A.Delete, A.Merge)):
                try:
                    self.run_stmt_plan_only(st, ctx)
                except SQLError as e:
                    if e.number in (207, 209, 4104, 8120, 1013, 213, 264, 145, 108, 116):
                        e.line = st.line
                        raise
                    continue  # 208 and run-time errors surface when the statement runs
            elif isinstance(st, A.Block):
                if self._prebind(st.body, ctx):
                    return True
            elif isinstance(st, A.If):
                if self._prebind([st.then], ctx) or (st.else_ is not None and self._prebind([st.else_], ctx)):
                    return True
            elif isinstance(st, A.While):
                if self._prebind([st.body], ctx):
                    return True
            elif isinstance(st, (A.CreateTable, A.DropTable, A.CreateIndex, A.DropIndex, A.Truncate)):
                return True
        return False

    def run_stmt_plan_only(self, st: A.Stmt, ctx: Ctx) -> None:
        ex = self.executor
        if isinstance(st, A.Select):
            ex.plan(st, ctx, lambda p: p.select(st))
        elif isinstance(st, A.Insert):
            ex.plan(st, ctx, lambda p: ex.build_insert(p, st))
        elif isinstance(st, A.Update):
            ex.plan(st, ctx, lambda p: ex.build_update(p, st))
        elif isinstance(st, A.Delete):
            ex.plan(st, ctx, lambda p: ex.build_delete(p, st))
        elif isinstance(st, A.Merge):
            ex.plan(st, ctx, lambda p: ex.build_merge(p, st))

    # ------------------------------------------------------------------ transactions

    def undo_to(self, mark: int) -> None:
        undo = self.undo
        eng = self.engine
        while len(undo) > mark:
            entry = undo.pop()
            op = entry[0]
            if op == "ins":
                t, rowid = entry[1], entry[2]
                if rowid in t.rows:
                    t.delete(rowid)
            elif op == "del":
                entry[1].insert(entry[3], entry[2])
            elif op == "upd":
                entry[1].update_many(entry[2])
            elif op == "create":
                entry[1].remove(entry[2])
                eng.schema_version += 1
            elif op == "drop":
                entry[1].add(entry[2])
                eng.schema_version += 1
            elif op == "cidx":
                entry[1].drop_index(entry[2])
                eng.schema_version += 1
            elif op == "didx":
                entry[1].add_index(entry[2])
                eng.schema_version += 1
            elif op == "trunc":
                entry[1].restore(entry[2])
        for name, pos in list(self.savepoints.items()):
            if pos > mark:
                del self.savepoints[name]

    def rollback_all(self) -> None:
        self.last_tran_end = "rollback"
        self.undo_to(0)
        self.trancount = 0
        self.savepoints.clear()
        self.tran_name = None
        self.end_transaction_locks()

    def commit_all(self) -> None:
        self.last_tran_end = "commit"
        if self.undo:
            self.engine.dirty = True
        self.undo.clear()
        self.savepoints.clear()
        self.tran_name = None
        self.trancount = 0
        self.end_transaction_locks()

    def end_transaction_locks(self) -> None:
        locks = self.engine.locks
        released = locks.release(self.session_id, TXN)
        released = locks.release_resource_kind(self.session_id, "a", TXN) or released
        if released:  # only lock waits wait on cond: with nothing released there is nobody to wake
            self.engine.cond.notify_all()


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


class _Run:
    """One batch execution: walks statements, applies error semantics."""

    def __init__(
        self,
        session: EngineSession,
        ctx: Ctx,
        key: str,
        raws: list[str],
        events: list[Event],
        cancel: Optional[CancelFlag],
    ) -> None:
        self.s = session
        self.ctx = ctx
        self.key = key
        self.raws = raws
        self.events = events
        self.cancel = cancel

    def stmt_text(self, st: A.Stmt) -> str:
        """The statement's source text (for EngineHooks): its span of the shape key, literals put back.

        Runs for every statement when hooks are set (the server's are); the split of the span at the
        markers depends only on the shape key, so it is kept on the (cached) statement.
        """
        pieces = st.text_pieces
        if pieces is None:
            start, end, _ = st.span
            pieces = st.text_pieces = MARKER_RE.split(self.key[start:end])
        if len(pieces) == 1:
            return pieces[0]
        first = st.span[2]
        raws = self.raws
        n = len(raws)
        out = [pieces[0]]
        for i in range(1, len(pieces)):
            slot = first + i - 1
            out.append(raws[slot] if slot < n else "")
            out.append(pieces[i])
        return "".join(out)

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

    # ------------------------------------------------------------------ EXEC

    def exec_(self, st: A.Exec) -> None:
        c = self.ctx
        pname = st.proc.name.upper()
        if st.proc.schema is not None and st.proc.schema.upper() not in ("DBO", "SYS"):
            pname = "?"
        if pname not in ("SP_GETAPPLOCK", "SP_RELEASEAPPLOCK"):
            raise SQLError(2812, f"Could not find stored procedure '{st.proc.display()}'.", 16, 62)
        params: dict[str, Any] = {}
        order = (
            ["@RESOURCE", "@LOCKMODE", "@LOCKOWNER", "@LOCKTIMEOUT", "@DBPRINCIPAL"]
            if pname == "SP_GETAPPLOCK"
            else ["@RESOURCE", "@LOCKOWNER", "@DBPRINCIPAL"]
        )
        for i, arg in enumerate(st.args):
            name = arg.name
            if name is None:
                if i >= len(order):
                    raise SQLError(
                        8144, f"Procedure or function {st.proc.name} has too many arguments specified.", 16, 2
                    )
                name = order[i]
            if name not in order:
                raise SQLError(8145, f"{arg.name} is not a parameter for procedure {st.proc.name}.", 16, 1)
            if name == "@LOCKTIMEOUT":
                params[name] = self.int_argument(arg.expr)
            else:
                params[name] = self.scalar(st, arg.expr)
        if pname == "SP_GETAPPLOCK" and "@LOCKMODE" not in params:
            # @LockMode is the one parameter without a default ("@LockMode is varchar(32), with no
            # default": learn.microsoft.com/en-us/sql/relational-databases/system-stored-procedures/
            # sp-getapplock-transact-sql), so leaving it out is error 201, severity 16, state 4 (text and
            # state: learn.microsoft.com/en-us/sql/relational-databases/errors-events/
            # database-engine-events-and-errors-0-to-999; sql-server-helper.com/error-messages/msg-201.aspx
            # shows it for a system procedure, sp_changedbowner).
            raise SQLError(
                201,
                "Procedure or function 'sp_getapplock' expects parameter '@LockMode', "
                "which was not supplied.",
                16,
                4,
            )
        ret = self.applock(pname, params, st)
        if st.ret is not None:
            c.vars[st.ret.index] = ret
        self.events.append(Done(None))

    def int_argument(self, e: A.Expr) -> Optional[int]:
        """An argument for an ``int`` procedure parameter (@LockTimeout), converted as SQL Server binds it.

        A value the parameter's type cannot take is an error of the call, before the procedure runs
        ("An error is returned if a stored procedure is executed with a value incompatible with the data
        type": learn.microsoft.com/en-us/previous-versions/sql/sql-server-2008-r2/ms190182(v=sql.105)):
        a refused implicit conversion is 257 (datetime -> int, as everywhere in the engine), text that is
        not an integer is 8114 "Error converting data type varchar to int." (the message SQL Server gives
        for a procedure argument, where CAST would give 245: codewithsql.com/errors/8114), a number
        outside int is 8115.
        """
        c = self.ctx
        planner = Planner(self.s, c.batch.var_types)
        ce = Binder(Scope([]), c.batch.var_types, planner.subquery).compile(e)
        value = ce.fn(c, None)
        if value is None:
            return None
        check_implicit(ce.type, T_INT)
        try:
            converted = convert(value, ce.type, T_INT)
        except SQLError as exc:
            if exc.number not in (245, 248):
                raise
            raise SQLError(8114, f"Error converting data type {ce.type.kind} to int.", 16, 5) from None
        if not isinstance(converted, int):  # no conversion of this type to int is modelled
            raise SQLError(
                206,
                f"Operand type clash: {ce.type.kind} is incompatible with int. (The SQL Server stand-in "
                "does not model this argument type for @LockTimeout; unverified.)",
                16,
                2,
            )
        return converted

    def applock(self, pname: str, params: dict[str, Any], st: A.Exec) -> int:
        s = self.s
        eng = s.engine
        locks = eng.locks
        # Return codes and messages as SQL Server gives them: bad argument values return -999 ("Indicates
        # a parameter validation or other call error": learn.microsoft.com/en-us/sql/relational-databases/
        # system-stored-procedures/sp-getapplock-transact-sql, return code values). Whether SQL Server
        # also sends an informational message with that -999 is unverified: the stand-in sends none.
        # @Resource "is nvarchar(255), with a default of NULL" (same page; sp-releaseapplock-transact-sql
        # too): leaving it out is passing NULL, which xp_userlock refuses with 1224.
        resource = params.get("@RESOURCE")
        if resource is None:
            raise SQLError(1224, "An invalid application lock resource was passed to xp_userlock.", 16, 5)
        owner = str(params.get("@LOCKOWNER") or "Transaction").upper()
        if owner not in ("SESSION", "TRANSACTION"):
            return -999
        # "If a resource string is longer than nvarchar(255), the value is truncated to nvarchar(255)"
        # (same page): a longer name takes the lock of its first 255 characters. Babelfish keeps 255
        # UTF-8 bytes (profiles.py).
        keep = clip_utf8 if eng.profile.applock_resource_utf8_bytes else (lambda text, n: text[:n])
        resource = keep(str(resource), 255)
        res = ("a", s.database.upper(), resource)
        duration = SESSION if owner == "SESSION" else TXN
        if pname == "SP_RELEASEAPPLOCK":
            if not locks.release_one(s.session_id, res, duration):
                self.events.append(
                    SQLError(
                        1223,
                        f"Cannot release the application lock (Database Principal: 'public', Resource: "
                        f"'{resource}') because it is not currently held.",
                        16,
                        1,
                        st.line,
                    ).to_message()
                )
                return -999
            eng.cond.notify_all()
            return 0
        mode = _APPLOCK_MODES.get(str(params.get("@LOCKMODE") or "").upper())
        if mode is None:
            return -999
        if duration == TXN and s.trancount == 0:
            return -999
        timeout_v = params.get("@LOCKTIMEOUT")  # already an int (int_argument) or NULL
        timeout = s.lock_timeout if timeout_v is None else int(timeout_v)
        if timeout < -1:
            raise SQLError(1227, "An invalid application lock time-out was passed to xp_userlock.", 16, 2)
        started = time.monotonic()
        waited = False
        while True:
            try:
                locks.acquire(s.session_id, res, mode, duration, counted=True)
                return eng.profile.applock_waited_grant if waited else 0  # 1; Babelfish: 0
            except LockConflict as lc:
                if locks.would_deadlock(s.session_id, lc.blockers):
                    return -3
                elapsed = (time.monotonic() - started) * 1000
                if timeout == 0:
                    return eng.profile.applock_nowait_busy  # -1; Babelfish: -999 (profiles.py)
                if timeout >= 0 and elapsed >= timeout:
                    return -1
                waited = True
                locks.waits[s.session_id] = lc.blockers
                w = 0.05 if timeout < 0 else max(0.001, min(0.05, (timeout - elapsed) / 1000))
                eng.cond.wait(w)
                locks.waits.pop(s.session_id, None)
                if self.cancel is not None and self.cancel.is_set():
                    raise Cancelled() from None

    # ------------------------------------------------------------------ RAISERROR / THROW

    def raiserror(self, st: A.Raiserror) -> None:
        msg = self.scalar(st, st.message)
        sev = self.scalar(st, st.severity)
        state = self.scalar(st, st.state)
        args = [self.scalar(st, a) for a in st.args]
        number = 50000
        if isinstance(msg, int):
            raise SQLError(
                2732,
                f"Error number {msg} is invalid. The number must be from 13000 through 2147483647 "
                "and it cannot be 50000.",
                16,
                1,
            )
        text = _printf(str(msg or ""), args)
        sev_i = _int_param(sev or 0)
        if sev_i > 18:
            raise SQLError(
                2754,
                "Error severity levels greater than 18 can only be specified by members of the "
                "sysadmin role, using the WITH LOG option.",
                16,
                1,
            )
        if sev_i <= 10:
            self.events.append(Message(number, sev_i, _int_param(state or 1), text, st.line))
            self.events.append(Done(None))
            return
        e = SQLError(number, text, sev_i, _int_param(state or 1))
        e.raiserror = True  # type: ignore[attr-defined]
        raise e

    def throw(self, st: A.Throw) -> None:
        assert st.number is not None and st.message is not None and st.state is not None
        num = self.scalar(st, st.number)
        msg = self.scalar(st, st.message)
        state = self.scalar(st, st.state)
        if num is None or _int_param(num) < 50000:
            raise SQLError(
                35100,
                f"Error number {num} in the THROW statement is outside the valid range. Specify an "
                "error number in the valid range of 50000 to 2147483647.",
                16,
                10,
            )
        e = SQLError(_int_param(num), str(msg), 16, _int_param(state or 1))
        e.batch_abort = True  # type: ignore[attr-defined]
        raise e

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


def _int_param(v: Any) -> int:
    """An int parameter/option value given as any type (SQL Server: 8114 when it does not convert)."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v)
    if isinstance(v, str) and re.fullmatch(r"\s*[+-]?\d+\s*", v):
        return int(v)
    kind = "nvarchar" if isinstance(v, str) else "varbinary" if isinstance(v, bytes) else "datetime"
    raise SQLError(8114, f"Error converting data type {kind} to int.", 16)


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


def _constraint_name(prefix: str, table: str, seed: int) -> str:
    h = (seed * 2654435761) & 0xFFFFFFFFFFFFFFFF
    return f"{prefix}__{table[:8]}__{h:016X}"


def _printf(fmt: str, args: list[Any]) -> str:
    it = iter(args)

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "%%":
            return "%"
        v = next(it, None)
        return "(null)" if v is None else str(v)

    return re.sub(r"%%|%[-+ 0#]*\d*(?:\.\d+)?[sdiuoxX]", sub, fmt)


_ = (ResultSet, Index, SqlT, require_table, var_converter)
