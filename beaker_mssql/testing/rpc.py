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
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable, Optional

from . import tds
from .replies import encode_events, returnvalue
from .results import MAX, Done, Event, Message, SQLError

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


class RpcDecodeError(Exception):
    """An RPC parameter the stand-in cannot decode or does not support (answered with an ERROR)."""


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


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.buf):
            raise tds.ProtocolError("RPC request ends inside a parameter")
        data = self.buf[self.pos:end]
        self.pos = end
        return data

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(_H.unpack(self.take(2))[0])

    def u32(self) -> int:
        return int(_I.unpack(self.take(4))[0])

    def b_varchar(self) -> str:
        n = self.u8()
        return self.take(2 * n).decode("utf-16-le", errors="replace")

    @property
    def done(self) -> bool:
        return self.pos >= len(self.buf)


@dataclass
class _TypeInfo:
    code: int
    name: str
    size: int = 0  # max length (bytes) for variable types, 0xFFFF for PLP; scale for time types
    collation: bytes = b""
    precision: int = 0


# Fixed-length types: code -> (name, bytes)
_FIXED = {0x30: ("tinyint", 1), 0x34: ("smallint", 2), 0x38: ("int", 4), 0x7F: ("bigint", 8),
          0x32: ("bit", 1), 0x3B: ("real", 4), 0x3E: ("float", 8), 0x3D: ("datetime", 8),
          0x3A: ("smalldatetime", 4), 0x3C: ("money", 8), 0x7A: ("smallmoney", 4), 0x1F: ("null", 0)}
# BYTELEN types (one length byte in TYPE_INFO and before each value)
_BYTELEN = {0x26: "intn", 0x68: "bitn", 0x6D: "floatn", 0x6F: "datetimen", 0x24: "uniqueidentifier",
            0x6E: "moneyn"}
# USHORTLEN types with a collation (strings) or without (binary)
_USHORT_CHAR = {0xE7: "nvarchar", 0xEF: "nchar", 0xA7: "varchar", 0xAF: "char"}
_USHORT_BIN = {0xA5: "varbinary", 0xAD: "binary"}
_LONGLEN = {0x63: "ntext", 0x23: "text", 0x22: "image"}


def _read_type_info(r: _Reader) -> _TypeInfo:
    code = r.u8()
    if code in _FIXED:
        return _TypeInfo(code, _FIXED[code][0], _FIXED[code][1])
    if code in _BYTELEN:
        return _TypeInfo(code, _BYTELEN[code], r.u8())
    if code in _USHORT_CHAR:
        size = r.u16()
        return _TypeInfo(code, _USHORT_CHAR[code], size, r.take(5))
    if code in _USHORT_BIN:
        return _TypeInfo(code, _USHORT_BIN[code], r.u16())
    if code in (0x6A, 0x6C):  # DECIMALN / NUMERICN: length, precision, scale
        size = r.u8()
        precision = r.u8()
        r.u8()
        return _TypeInfo(code, "decimal" if code == 0x6A else "numeric", size, precision=precision)
    if code == 0x28:  # DATEN
        return _TypeInfo(code, "date")
    if code in (0x29, 0x2A, 0x2B):  # TIMEN, DATETIME2N, DATETIMEOFFSETN: scale
        return _TypeInfo(code, {0x29: "time", 0x2A: "datetime2", 0x2B: "datetimeoffset"}[code], r.u8())
    if code in _LONGLEN:
        size = r.u32()
        collation = r.take(5) if code != 0x22 else b""
        return _TypeInfo(code, _LONGLEN[code], size, collation)
    raise RpcDecodeError(f"the TDS data type 0x{code:02X}")


def _plp(r: _Reader) -> Optional[bytes]:
    total = struct.unpack("<Q", r.take(8))[0]
    if total == 0xFFFFFFFFFFFFFFFF:
        return None
    parts: list[bytes] = []
    while True:
        n = r.u32()
        if n == 0:
            return b"".join(parts)
        parts.append(r.take(n))


def _text_codec(collation: bytes) -> str:
    """The code page of a varchar value: UTF-8 under a _UTF8 collation, else the LCID's (1252 here)."""
    if len(collation) == 5 and collation[3] & 0x04:  # fUTF8 ([MS-TDS] 2.2.5.1.2)
        return "utf-8"
    return "cp1252"


_EPOCH = datetime(1900, 1, 1)
_DATE0 = datetime(1, 1, 1)


def _time_part(data: bytes, scale: int) -> timedelta:
    units = int.from_bytes(data, "little")
    return timedelta(microseconds=units * 10 ** 6 // 10 ** scale)


def _read_value(r: _Reader, ti: _TypeInfo) -> Any:
    code = ti.code
    if code in _FIXED:
        data = r.take(ti.size)
        return _fixed_value(ti.name, data)
    if code in _BYTELEN:
        n = r.u8()
        if n == 0:
            return None
        data = r.take(n)
        if ti.name == "intn":
            return int.from_bytes(data, "little", signed=True)
        if ti.name == "bitn":
            return bool(data[0])
        if ti.name == "floatn":
            return struct.unpack("<d" if n == 8 else "<f", data)[0]
        if ti.name == "datetimen":
            return _fixed_value("datetime" if n == 8 else "smalldatetime", data)
        return data
    if code in _USHORT_CHAR or code in _USHORT_BIN:
        raw: Optional[bytes]
        if ti.size == 0xFFFF:
            raw = _plp(r)
        else:
            n = r.u16()
            raw = None if n == 0xFFFF else r.take(n)
        if raw is None:
            return None
        if code in _USHORT_BIN:
            return raw
        if code in (0xE7, 0xEF):
            return raw.decode("utf-16-le", errors="replace")
        return raw.decode(_text_codec(ti.collation), errors="replace")
    if code in (0x6A, 0x6C):
        n = r.u8()
        if n:
            r.take(n)
        return None
    if code in (0x28, 0x29, 0x2A, 0x2B):
        n = r.u8()
        if n == 0:
            return None
        data = r.take(n)
        if code == 0x28:
            return _DATE0 + timedelta(days=int.from_bytes(data, "little"))
        tlen = {0: 3, 1: 3, 2: 3, 3: 4, 4: 4, 5: 5, 6: 5, 7: 5}.get(ti.size, 5)
        t = _time_part(data[:tlen], ti.size)
        if code == 0x29:
            return t
        day = _DATE0 + timedelta(days=int.from_bytes(data[tlen:tlen + 3], "little"))
        value = day + t
        if code == 0x2B:
            # datetimeoffset is sent in UTC; its conversion to datetime/datetime2 keeps the local time.
            offset = struct.unpack("<h", data[tlen + 3:tlen + 5])[0]
            value += timedelta(minutes=offset)
        return value
    if code in _LONGLEN:
        n = r.u8()  # text pointer length; 0 = NULL
        if n == 0:
            return None
        r.take(n + 8)  # text pointer + timestamp
        length = r.u32()
        data = r.take(length)
        if code == 0x22:
            return data
        return data.decode("utf-16-le" if code == 0x63 else _text_codec(ti.collation), errors="replace")
    raise RpcDecodeError(f"the TDS data type 0x{code:02X}")  # pragma: no cover - _read_type_info refused


def _fixed_value(name: str, data: bytes) -> Any:
    if name in ("tinyint", "smallint", "int", "bigint"):
        return int.from_bytes(data, "little", signed=name != "tinyint")
    if name == "bit":
        return bool(data[0])
    if name == "real":
        return float(struct.unpack("<f", data)[0])
    if name == "float":
        return float(struct.unpack("<d", data)[0])
    if name == "datetime":
        days, ticks = struct.unpack("<iI", data)
        return _EPOCH + timedelta(days=days, milliseconds=ticks * 10 / 3)
    if name == "smalldatetime":
        days, minutes = struct.unpack("<HH", data)
        return _EPOCH + timedelta(days=days, minutes=minutes)
    return data  # money types are refused by _engine_type


def _engine_type(ti: _TypeInfo) -> tuple[str, Optional[SqlT]]:
    """(the SQL type name the client sent, the engine type of its value or None if unsupported)."""
    from .engine.types import T_BIGINT, T_BIT, T_DATETIME, T_DATETIME2, T_FLOAT, T_INT, T_NULL, SqlT

    name = ti.name
    if name in ("tinyint", "smallint", "int"):
        return name, T_INT
    if name == "intn":
        return {1: "tinyint", 2: "smallint", 4: "int", 8: "bigint"}.get(ti.size, "int"), (
            T_BIGINT if ti.size == 8 else T_INT)
    if name == "bigint":
        return name, T_BIGINT
    if name in ("bit", "bitn"):
        return "bit", T_BIT
    if name in ("real", "float", "floatn"):
        return ("real" if ti.size == 4 else "float"), T_FLOAT
    if name in ("datetime", "smalldatetime", "datetimen"):
        return ("smalldatetime" if ti.size == 4 else "datetime"), T_DATETIME
    if name in ("date", "datetime2", "datetimeoffset"):
        return name, T_DATETIME2
    if name in ("nvarchar", "nchar", "ntext"):
        chars = MAX if ti.size in (0xFFFF,) or name == "ntext" or ti.size > 8000 else max(ti.size // 2, 1)
        return name, SqlT("nvarchar", chars)
    if name in ("varchar", "char", "text"):
        chars = MAX if ti.size == 0xFFFF or name == "text" or ti.size > 8000 else max(ti.size, 1)
        return name, SqlT("varchar", chars)
    if name in ("varbinary", "binary", "image"):
        length = MAX if ti.size == 0xFFFF or name == "image" or ti.size > 8000 else max(ti.size, 1)
        return name, SqlT("varbinary", length)
    if name == "null":
        return name, T_NULL
    return name, None


def parse_rpc(payload: bytes, tds_version: int) -> list[RpcCall]:
    """The procedure calls of one RPC request message (ALL_HEADERS skipped)."""
    start = 0
    if tds_version >= tds.TDS72 and len(payload) >= 4:
        total = _I.unpack_from(payload, 0)[0]
        if 4 <= total <= len(payload):
            start = total
    r = _Reader(payload, start)
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
            ti = _read_type_info(r)
            value = _read_value(r, ti)
            wire, etype = _engine_type(ti)
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


def rpc_error_reply(exc: Exception, server_name: str) -> bytes:
    """The answer to an RPC whose parameters could not be decoded."""
    msg = Message(102, 15, 1,
                  f"Incorrect syntax near 'RPC'. (The SQL Server stand-in does not support {exc}.)")
    return tds.message_token(msg, server_name) + tds.doneproc(tds.DONE_ERROR)


__all__ = ["Done", "RpcCall", "RpcDecodeError", "RpcParam", "RpcRunner", "parse_declarations", "parse_rpc",
           "rpc_error_reply"]
