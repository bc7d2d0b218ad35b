"""EngineSession: runs batches statement by statement with SQL Server's error, transaction and lock
semantics.

This file holds the session itself (its SET options, transaction undo log and lock release); a batch
is run by ``_Run`` in run_statements.py, built in layers: run_base (state, abort signals) ->
run_procedures (EXEC, RAISERROR, THROW) and run_ddl -> run_statements.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from ..results import Done, Event, ResultSet, SQLError
from . import ast as A
from .context import Ctx, require_table
from .dialect import refused_batch, refused_statements
from .executor import Executor
from .lexer import scan_literals
from .locks import SESSION, TXN
from .parser import parse
from .query import var_converter
from .run_base import CancelFlag, Cancelled, _BatchAbort, _Break, _Continue, _Return
from .run_statements import _Run
from .storage import Index
from .types import SqlT

if TYPE_CHECKING:
    from . import Engine


BindHook = Callable[[A.Batch, Ctx], int]


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
        self.executor: Executor = Executor(self)

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


_ = (ResultSet, Index, SqlT, require_table, var_converter)
