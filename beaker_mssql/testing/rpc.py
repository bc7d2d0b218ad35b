"""RPC requests ([MS-TDS] 2.2.6.6): decoding typed parameters and running the procedures clients call.

tedious (Node) and python-tds send every parameterised statement as an RPC to ``sp_executesql``;
tedious's prepared statements use ``sp_prepare``/``sp_execute``/``sp_unprepare``. The T-SQL they carry
runs through the engine's batch path (``EngineSession.execute``): the parameter declarations become a
``DECLARE`` in front of the statement, whose variables are set from the RPC values before anything
runs (the ``bind`` hook) and whose statement is then skipped. So the T-SQL reached through RPC is
refused exactly where a batch is; only the parameter checks below are RPC's own.

Any other procedure name (``sp_getapplock``, ``sp_releaseapplock``, unknown ones) becomes
``EXEC @ret = proc @arg, @name = @arg ...`` on the same path, so its argument rules and errors
(8144, 8145, 2812, ...) are the batch path's.

The parameter errors raised here (201, 206, 214, 119, 8114, 8144, 8145, 8162, 8178, 8179) carry SQL
Server's numbers, severities and message templates as sys.messages lists them
(https://learn.microsoft.com/sql/relational-databases/errors-events/database-engine-events-and-errors).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from . import tds
from .replies import encode_events, returnvalue
from .results import Done, Event, Message, SQLError
from .typeinfo import Reader, RpcDecodeError, engine_type, read_type_info, read_value

if TYPE_CHECKING:
    from .engine.ast import Batch
    from .engine.executor import Ctx
    from .engine.types import SqlT

# [MS-TDS] 2.2.6.6: the well-known procedure ids a client may send instead of a name.
PROC_IDS = {
    1: "sp_cursor", 2: "sp_cursoropen", 3: "sp_cursorprepare", 4: "sp_cursorexecute",
    5: "sp_cursorprepexec", 6: "sp_cursorunprepare", 7: "sp_cursorfetch", 8: "sp_cursoroption",
    9: "sp_cursorclose", 10: "sp_executesql", 11: "sp_prepare", 12: "sp_execute", 13: "sp_prepexec",
    14: "sp_prepexecrpc", 15: "sp_unprepare",
}

# Parameter status flags ([MS-TDS] 2.2.6.6 StatusFlags)
BY_REF = 0x01
DEFAULT_VALUE = 0x02
ENCRYPTED = 0x08

_I = struct.Struct("<I")
_H = struct.Struct("<H")


@dataclass
class RpcParam:
    """One RPC parameter: its name ('' when positional), flags, engine type and decoded value."""

    name: str
    status: int
    wire_type: str  # the SQL type name the client sent, for messages ('nvarchar', 'int', ...)
    type: Optional[SqlT]  # the engine type of the value (None: a type the engine does not have)
    value: Any

    @property
    def by_ref(self) -> bool:
        return bool(self.status & BY_REF)

    @property
    def default(self) -> bool:
        return bool(self.status & DEFAULT_VALUE)

    @property
    def is_unicode_text(self) -> bool:
        """nvarchar/nchar/ntext: the only types sp_executesql takes for @statement and @params (214)."""
        return self.wire_type in ("nvarchar", "nchar", "ntext")


@dataclass
class RpcCall:
    """One procedure call of an RPC request (a request may hold several, separated by a batch flag)."""

    proc: str  # lower-case name without schema, e.g. 'sp_executesql'
    display: str  # the name as the client sent it
    params: list[RpcParam] = field(default_factory=list)


# -- decoding -------------------------------------------------------------------------------------------


def parse_rpc(payload: bytes, tds_version: int) -> list[RpcCall]:
    """The procedure calls of one RPC request message (ALL_HEADERS skipped)."""
    start = 0
    if tds_version >= tds.TDS72 and len(payload) >= 4:
        total = _I.unpack_from(payload, 0)[0]
        if 4 <= total <= len(payload):
            start = total
    r = Reader(payload, start)
    calls: list[RpcCall] = []
    while not r.done:
        n = r.u16()
        if n == 0xFFFF:
            proc_id = r.u16()
            name = PROC_IDS.get(proc_id, f"procedure id {proc_id}")
            display = name
        else:
            display = r.take(2 * n).decode("utf-16-le", errors="replace")
            name = display.split(".")[-1].strip("[]").lower()
        r.u16()  # option flags (WithRecomp, NoMetaData, ReuseMetaData): nothing to do for the stand-in
        call = RpcCall(name, display)
        while not r.done:
            if r.buf[r.pos] in (0x80, 0xFF, 0xFE):  # BatchFlag / NoExecFlag: the next call follows
                r.pos += 1
                break
            pname = r.b_varchar()
            status = r.u8()
            if status & ENCRYPTED:
                raise RpcDecodeError("Always Encrypted parameters")
            ti = read_type_info(r)
            value = read_value(r, ti)
            wire, etype = engine_type(ti)
            call.params.append(RpcParam(pname, status, wire, etype, value))
        calls.append(call)
    return calls


# -- the @params declaration list of sp_executesql / sp_prepare ------------------------------------------


@dataclass
class Declared:
    name: str  # '@sid'
    type_text: str  # 'nvarchar(255)'
    output: bool


_DECL = re.compile(r"^\s*(@[\w@#$]+)\s+(?:AS\s+)?(.+?)(?:\s+(OUTPUT|OUT))?\s*$", re.IGNORECASE | re.DOTALL)
# A type name as @params may spell it: [schema.]name[(n|max[, n])]. Anything else is not a declaration
# (and must never reach the engine as more T-SQL after the DECLARE).
_TYPE = re.compile(r"^(?:\[?\w+\]?\s*\.\s*)?\[?\w+\]?(?:\s*\(\s*(?:\d+|max)\s*(?:,\s*\d+\s*)?\))?$",
                   re.IGNORECASE)
_PARAM_NAME = re.compile(r"^@[\w@#$]+$")


def parse_declarations(text: str) -> list[Declared]:
    """Split ``@a int, @b nvarchar(10) OUTPUT`` at top-level commas; a malformed item is a 102."""
    items: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
    items.append("".join(current))
    if len(items) == 1 and not items[0].strip():
        return []
    out: list[Declared] = []
    for item in items:
        m = _DECL.match(item)
        if m is None or not _TYPE.match(m.group(2).strip()):
            words = item.strip().split()
            near = (words[-1] if m is not None else words[0]) if words else ","
            raise SQLError(102, f"Incorrect syntax near '{near}'.", 15, 1)
        out.append(Declared(m.group(1), " ".join(m.group(2).split()), m.group(3) is not None))
    return out


# -- running the calls ------------------------------------------------------------------------------------


@dataclass
class _Outcome:
    events: list[Event]
    status: Optional[int]  # RETURNSTATUS (None: none sent)
    # (ordinal, parameter, declared type, value) of each output parameter
    outputs: list[tuple[int, RpcParam, SqlT, Any]] = field(default_factory=list)


_TEXT_TYPES = "'ntext/nchar/nvarchar'"


def _err(number: int, text: str, severity: int = 16, state: int = 1) -> SQLError:
    return SQLError(number, text, severity, state)


class RpcRunner:
    """Runs the calls of RPC requests for one connection (which owns the prepared-statement handles)."""

    def __init__(self, log: Optional[Callable[[str], None]] = None) -> None:
        self.prepared: dict[int, tuple[str, str]] = {}  # handle -> (@params, statement)
        self._next_handle = 1
        self._log = log

    def run(self, session: Any, calls: list[RpcCall], cancel: Any, server_name: str) -> bytes:
        parts: list[bytes] = []
        for index, call in enumerate(calls):
            last = index == len(calls) - 1
            try:
                outcome = self._call(session, call, cancel)
            except SQLError as exc:
                outcome = _Outcome([exc.to_message()], None)
            parts.append(self._encode(outcome, server_name, last))
        return b"".join(parts)

    # -- one call --------------------------------------------------------------------------------------

    def _call(self, session: Any, call: RpcCall, cancel: Any) -> _Outcome:
        proc = call.proc
        for p in call.params:
            if p.type is None:
                raise _err(102, f"Incorrect syntax near '{p.name or proc}'. (The SQL Server stand-in does "
                                f"not support RPC parameters of type {p.wire_type}.)", 15)
        if proc == "sp_executesql":
            return self._executesql(session, call, cancel)
        if proc == "sp_prepare":
            return self._prepare(call)
        if proc == "sp_execute":
            return self._execute(session, call, cancel)
        if proc == "sp_prepexec":
            prepared = self._prepare(call)
            handle = prepared.outputs[0][3]
            outcome = self._run_prepared(session, handle, call.params[3:], 3, cancel)
            outcome.outputs = prepared.outputs + outcome.outputs
            return outcome
        if proc == "sp_unprepare":
            handle = self._handle(call, 0)
            if self.prepared.pop(handle, None) is None:
                raise _err(8179, f"Could not find prepared statement with handle {handle}.", 16, 4)
            return _Outcome([], 0)
        if proc == "sp_reset_connection":
            # Called by name by some pooled clients (python-tds): the same reset as RESETCONNECTION.
            session.reset()
            return _Outcome([], 0)
        if proc.startswith("sp_cursor") or proc == "sp_prepexecrpc":
            raise _err(2812, f"Could not find stored procedure '{call.display}'. (The SQL Server stand-in "
                             "does not support server cursors.)", 16, 62)
        return self._exec_proc(session, call, cancel)

    def _handle(self, call: RpcCall, index: int) -> int:
        from .engine.types import T_INT, check_implicit, convert

        if len(call.params) <= index or call.params[index].value is None:
            raise _err(8179, "Could not find prepared statement with handle 0.", 16, 4)
        p = call.params[index]
        assert p.type is not None
        check_implicit(p.type, T_INT)
        return int(convert(p.value, p.type, T_INT))

    def _text_arg(self, call: RpcCall, index: int, formal: str, required: bool) -> Optional[str]:
        """@statement / @params: nvarchar/nchar/ntext, by position or name, else 214.

        sp_executesql's statement is documented as ``@stmt`` and named ``@statement`` in its 214 message;
        both names are accepted."""
        params = call.params
        names = {formal.lower()} | ({"@stmt", "@statement"} if formal in ("@stmt", "@statement") else set())
        if index < len(params) and (not params[index].name or params[index].name.lower() in names):
            p = params[index]
            if not p.is_unicode_text:
                raise _err(214, f"Procedure expects parameter '{formal}' of type {_TEXT_TYPES}.", 16, 2)
            return str(p.value) if p.value is not None else None
        if required:
            raise _err(214, f"Procedure expects parameter '{formal}' of type {_TEXT_TYPES}.", 16, 2)
        return None

    def _executesql(self, session: Any, call: RpcCall, cancel: Any) -> _Outcome:
        statement = self._text_arg(call, 0, "@statement", required=True)
        params_text = self._text_arg(call, 1, "@params", required=len(call.params) > 1)
        if statement is None:
            return _Outcome([], 0)
        return self._run_statement(session, statement, params_text or "", call.params[2:], 2, cancel,
                                   "sp_executesql")

    def _prepare(self, call: RpcCall) -> _Outcome:
        params = call.params
        if not params or not params[0].by_ref:
            raise _err(201, "Procedure or function 'sp_prepare' expects parameter '@handle', which was not "
                            "supplied.", 16, 4)
        params_text = self._text_arg(call, 1, "@params", required=True) or ""
        statement = self._text_arg(call, 2, "@stmt", required=True) or ""
        parse_declarations(params_text)  # a malformed list fails now, as SQL Server's compile does
        handle = self._next_handle
        self._next_handle += 1
        self.prepared[handle] = (params_text, statement)
        from .engine.types import T_INT

        return _Outcome([], 0, [(0, params[0], T_INT, handle)])

    def _execute(self, session: Any, call: RpcCall, cancel: Any) -> _Outcome:
        return self._run_prepared(session, self._handle(call, 0), call.params[1:], 1, cancel)

    def _run_prepared(self, session: Any, handle: int, args: list[RpcParam], first_ordinal: int,
                      cancel: Any) -> _Outcome:
        found = self.prepared.get(handle)
        if found is None:
            raise _err(8179, f"Could not find prepared statement with handle {handle}.", 16, 4)
        params_text, statement = found
        return self._run_statement(session, statement, params_text, args, first_ordinal, cancel, "sp_execute")

    def _run_statement(self, session: Any, statement: str, params_text: str, args: list[RpcParam],
                       first_ordinal: int, cancel: Any, proc: str) -> _Outcome:
        """Bind ``args`` to the declarations and run the statement on the batch path."""
        from .engine.types import check_implicit, convert

        decls = parse_declarations(params_text)
        supplied: dict[int, tuple[int, RpcParam]] = {}  # declaration index -> (ordinal, arg)
        by_name = {d.name.lower(): i for i, d in enumerate(decls)}
        named_seen = False
        for offset, arg in enumerate(args):
            ordinal = first_ordinal + offset
            if arg.name:
                named_seen = True
                index = by_name.get(arg.name.lower())
                if index is None:
                    raise _err(8145, f"{arg.name} is not a parameter for procedure {proc}.", 16, 1)
            else:
                if named_seen:
                    raise _err(119, f"Must pass parameter number {ordinal + 1} and subsequent parameters "
                                    "as '@name = value'. After the form '@name = value' has been used, all "
                                    "subsequent parameters must be passed in the form '@name = value'.",
                               15, 1)
                if offset >= len(decls):
                    raise _err(8144, f"Procedure or function {proc} has too many arguments specified.", 16, 2)
                index = offset
            if arg.by_ref and not decls[index].output:
                raise _err(8162, f'The formal parameter "{decls[index].name}" was not declared as an OUTPUT '
                                 "parameter, but the actual parameter passed in requested output.", 16, 2)
            if not arg.default:
                supplied[index] = (ordinal, arg)
        for i, d in enumerate(decls):
            if i not in supplied:
                query = f"({params_text}){statement}"
                raise _err(8178, f"The parameterized query '{query[:4000]}' expects the parameter "
                                 f"'{d.name}', which was not supplied.", 16, 1)
        if not decls:
            return _Outcome(session.execute(statement, cancel), None)

        batch = "DECLARE " + ", ".join(f"{d.name} {d.type_text}" for d in decls) + ";" + statement
        state: dict[str, Any] = {}

        def bind(parsed: Batch, ctx: Ctx) -> int:
            from .engine import ast as A

            first = parsed.statements[0] if parsed.statements else None
            if not isinstance(first, A.Declare) or len(first.items) != len(decls):  # pragma: no cover
                raise _err(102, "Incorrect syntax near '@params'.", 15)  # _TYPE keeps this from happening
            for i, item in enumerate(first.items):
                _ordinal, arg = supplied[i]
                value = arg.value
                src = arg.type
                assert src is not None
                if value is not None and src.kind != "null":
                    try:
                        check_implicit(src, item.type)
                    except SQLError:
                        raise _err(206, f"Operand type clash: {arg.wire_type} is incompatible with "
                                        f"{item.type.kind}", 16, 2) from None
                    try:
                        value = convert(value, src, item.type)
                    except SQLError:
                        raise _err(8114, f"Error converting data type {arg.wire_type} to {item.type.kind}.",
                                   16, 5) from None
                ctx.vars[item.var.index] = value
            state["ctx"] = ctx
            state["items"] = first.items
            return 1

        events = session.execute(batch, cancel, bind)
        outputs: list[tuple[int, RpcParam, SqlT, Any]] = []
        ctx = state.get("ctx")
        if ctx is not None:
            items = state["items"]
            for i, d in enumerate(decls):
                ordinal, arg = supplied[i]
                if d.output and arg.by_ref:
                    outputs.append((ordinal, arg, items[i].type, ctx.vars[items[i].var.index]))
        failed = any(isinstance(e, Message) and e.is_error for e in events)
        return _Outcome(events, None if failed else 0, outputs)

    def _exec_proc(self, session: Any, call: RpcCall, cancel: Any) -> _Outcome:
        """Any other procedure: ``EXEC @ret = name args`` on the batch path (applocks, 2812 for the rest)."""
        decls = ["@__rpc_return int"]
        args: list[str] = []
        values: list[RpcParam] = []
        for n, p in enumerate(call.params):
            assert p.type is not None
            if p.name and not _PARAM_NAME.match(p.name):
                raise _err(8145, f"{p.name} is not a parameter for procedure {call.display}.", 16, 1)
            var = f"@__rpc_{n}"
            value_text = "DEFAULT" if p.default else var
            if not p.default:
                decls.append(f"{var} {p.type if p.type.kind != 'null' else 'int'}")
                values.append(p)
            args.append(f"{p.name} = {value_text}" if p.name else value_text)
        name = ".".join("[" + part.strip().strip("[]").replace("]", "]]") + "]"
                        for part in call.display.split("."))
        batch = f"DECLARE {', '.join(decls)};EXEC @__rpc_return = {name} {', '.join(args)}".rstrip()
        state: dict[str, Any] = {}

        def bind(parsed: Batch, ctx: Ctx) -> int:
            from .engine import ast as A

            first = parsed.statements[0]
            if not isinstance(first, A.Declare):  # pragma: no cover - the DECLARE is ours
                raise _err(102, f"Incorrect syntax near '{call.display}'.", 15)
            for item, p in zip(first.items[1:], values):
                ctx.vars[item.var.index] = p.value
            state["ctx"] = ctx
            state["ret"] = first.items[0].var.index
            return 1

        events = session.execute(batch, cancel, bind)
        ctx = state.get("ctx")
        failed = any(isinstance(e, Message) and e.is_error for e in events)
        status = None
        if ctx is not None and not failed:
            ret = ctx.vars[state["ret"]]
            status = 0 if ret is None else int(ret)
        return _Outcome(events, status)

    # -- the reply ----------------------------------------------------------------------------------------

    @staticmethod
    def _encode(outcome: _Outcome, server_name: str, last: bool) -> bytes:
        """Inner statements' tokens with DONEINPROC, then RETURNSTATUS, RETURNVALUEs and DONEPROC."""
        parts = [encode_events(outcome.events, server_name, in_proc=True)]
        if outcome.status is not None:
            parts.append(tds.returnstatus(outcome.status))
        for ordinal, param, sqltype, value in outcome.outputs:
            parts.append(returnvalue(ordinal, param.name, sqltype.wire(), value))
        error = any(isinstance(e, Message) and e.is_error for e in outcome.events)
        status = (tds.DONE_FINAL if last else tds.DONE_MORE) | (tds.DONE_ERROR if error else 0)
        parts.append(tds.doneproc(status))
        return b"".join(parts)


def sql_literal(value: Any) -> str:
    """A parameter value as a T-SQL literal, for the SQL log only (never executed)."""
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "N'" + value.replace("'", "''") + "'"
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex().upper()
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def rpc_error_reply(exc: Exception, server_name: str) -> bytes:
    """The answer to an RPC whose parameters could not be decoded."""
    msg = Message(102, 15, 1,
                  f"Incorrect syntax near 'RPC'. (The SQL Server stand-in does not support {exc}.)")
    return tds.message_token(msg, server_name) + tds.doneproc(tds.DONE_ERROR)


__all__ = ["Done", "RpcCall", "RpcDecodeError", "RpcParam", "RpcRunner", "parse_declarations", "parse_rpc",
           "rpc_error_reply", "sql_literal"]
