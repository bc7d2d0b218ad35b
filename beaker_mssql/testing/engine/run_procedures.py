"""EXEC of the system procedures the stand-in models (sp_getapplock, sp_releaseapplock, ...), with
their argument errors, and RAISERROR / THROW."""

from __future__ import annotations

import re
import time
from typing import Any, Optional

from ..profiles import clip_utf8
from ..results import Done, Message, SQLError
from . import ast as A
from .expressions import Binder, Scope
from .locks import SESSION, TXN, LockConflict
from .query import Planner
from .run_base import Cancelled, RunBase, _int_param
from .types import T_INT, check_implicit, convert

_APPLOCK_MODES = {
    "SHARED": "S",
    "UPDATE": "U",
    "EXCLUSIVE": "X",
    "INTENTSHARED": "IS",
    "INTENTEXCLUSIVE": "IX",
}


class ProcedureStatements(RunBase):
    """EXEC, RAISERROR and THROW for one batch run."""

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


def _printf(fmt: str, args: list[Any]) -> str:
    it = iter(args)

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "%%":
            return "%"
        v = next(it, None)
        return "(null)" if v is None else str(v)

    return re.sub(r"%%|%[-+ 0#]*\d*(?:\.\d+)?[sdiuoxX]", sub, fmt)
