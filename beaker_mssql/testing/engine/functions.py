"""Built-in functions and @@global variables."""

from __future__ import annotations

import hashlib
import math
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Optional

from ..results import MAX, SQLError
from . import ast as A
from .compiled import CE
from .datetimes import date_part, datetime_add, datetime_diff
from .types import (
    INTEGER_KINDS,
    STRING_KINDS,
    T_BIGINT,
    T_BIT,
    T_DATETIME,
    T_DATETIME2,
    T_FLOAT,
    T_INT,
    T_NULL,
    T_SYSNAME,
    SqlT,
    check_implicit,
    convert,
    format_datetime_default,
    result_type,
)

if TYPE_CHECKING:
    from .context import Ctx
    from .expressions import Binder

VERSION = (
    "Microsoft SQL Server 2019 (RTM) - 15.0.2000.5 compatible: beaker_mssql.testing SQL Server stand-in "
    "(an in-process Python emulation of a T-SQL subset, not a real SQL Server)"
)


def global_variable(name: str) -> CE:
    def fn(c: Ctx, r: Any) -> Any:
        s = c.session
        if name == "@@ROWCOUNT":
            return s.rowcount
        if name == "@@TRANCOUNT":
            return s.trancount
        if name == "@@SPID":
            return s.session_id
        if name == "@@ERROR":
            return s.last_error
        if name == "@@VERSION":
            tag = s.engine.profile.version_tag
            return f"{VERSION} [{tag}]" if tag else VERSION
        if name == "@@IDENTITY":
            return None
        if name in ("@@SERVERNAME", "@@SERVICENAME"):
            return "STANDIN" if name == "@@SERVERNAME" else "MSSQLSERVER"
        if name == "@@LOCK_TIMEOUT":
            return s.lock_timeout
        if name == "@@LANGUAGE":
            return "us_english"
        if name == "@@TEXTSIZE":
            return s.textsize
        if name == "@@DATEFIRST":
            return 7
        if name == "@@OPTIONS":
            return (
                5496
                | (16384 if s.xact_abort else 0)
                | (512 if s.nocount else 0)
                | (2 if s.implicit_transactions else 0)
            )
        if name == "@@MAX_PRECISION":
            return 38
        if name in ("@@NESTLEVEL", "@@PROCID", "@@FETCH_STATUS"):
            return 0 if name != "@@FETCH_STATUS" else -1
        return None

    types = {
        "@@VERSION": SqlT("nvarchar", 300),
        "@@SERVERNAME": T_SYSNAME,
        "@@SERVICENAME": T_SYSNAME,
        "@@LANGUAGE": T_SYSNAME,
        "@@IDENTITY": SqlT("bigint"),
    }
    return CE(fn, types.get(name, T_INT))


def format_style(v: datetime, style: Any, kind: str) -> str:
    if style in (None, 0, 100):
        return format_datetime_default(v)
    if style in (120, 20):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    if style in (121, 21, 126, 127):
        sep = "T" if style in (126, 127) else " "
        frac = f"{v.microsecond // 1000:03d}" if kind == "datetime" else f"{v.microsecond:06d}0"
        return v.strftime(f"%Y-%m-%d{sep}%H:%M:%S.") + frac
    if style in (112,):
        return v.strftime("%Y%m%d")
    if style in (23,):
        return v.strftime("%Y-%m-%d")
    if style in (108, 8):
        return v.strftime("%H:%M:%S")
    raise SQLError(
        281, f"{style} is not a valid style number when converting from {kind} to a character string.", 16
    )


def _parse_object_name(text: str) -> tuple[Optional[str], Optional[str], str]:
    """Split a (possibly bracketed) multi-part name: returns (database, schema, name)."""
    parts: list[str] = []
    i = 0
    n = len(text)
    cur = ""
    while i < n:
        ch = text[i]
        if ch == "[":
            j = i + 1
            buf = ""
            while j < n:
                if text[j] == "]":
                    if j + 1 < n and text[j + 1] == "]":
                        buf += "]"
                        j += 2
                        continue
                    break
                buf += text[j]
                j += 1
            cur += buf
            i = j + 1
            continue
        if ch == '"':
            j = text.find('"', i + 1)
            if j < 0:
                j = n
            cur += text[i + 1 : j]
            i = j + 1
            continue
        if ch == ".":
            parts.append(cur)
            cur = ""
            i += 1
            continue
        cur += ch
        i += 1
    parts.append(cur)
    parts = [p.strip() if not p.startswith(" ") else p for p in parts]
    name = parts[-1]
    schema = parts[-2] if len(parts) >= 2 and parts[-2] != "" else None
    db = parts[-3] if len(parts) >= 3 and parts[-3] != "" else None
    return db, schema, name


def compile_function(b: Binder, e: A.Func) -> CE:
    name = e.name
    args = e.args
    if name in ("COUNT", "COUNT_BIG", "MIN", "MAX", "SUM", "AVG"):
        return aggregate_ref(b, e)
    if name in ("GETDATE", "GETUTCDATE", "SYSUTCDATETIME", "SYSDATETIME"):
        if name == "GETDATE":

            def getdate(c: Ctx, r: Any) -> Any:
                return c.now_local()

            return CE(getdate, T_DATETIME)
        if name == "GETUTCDATE":

            def getutcdate(c: Ctx, r: Any) -> Any:
                return c.now_utc()

            return CE(getutcdate, T_DATETIME)
        if name == "SYSUTCDATETIME":

            def sysutc(c: Ctx, r: Any) -> Any:
                return c.now_utc2()

            return CE(sysutc, T_DATETIME2)

        def sysdt(c: Ctx, r: Any) -> Any:
            return c.now_local2()

        return CE(sysdt, T_DATETIME2)
    if name in ("DATEADD", "DATEDIFF", "DATEDIFF_BIG", "DATEPART"):
        part_node = args[0]
        assert isinstance(part_node, A.DatePart)
        part = part_node.name
        if name == "DATEADD":
            n = b.compile(args[1])
            d = b.compile(args[2])
            if (
                n.type.kind not in INTEGER_KINDS
                and n.type.kind not in ("float", "null")
                and not n.type.is_string
            ):
                raise SQLError(
                    8116,
                    f"Argument data type {n.type.kind} is invalid for argument 2 of dateadd function.",
                    16,
                )
            fn_n = b.coerce(n, T_BIGINT) if n.type.kind != "float" else n.fn
            dt_t = d.type if d.type.kind in ("datetime", "datetime2") else T_DATETIME
            if (
                d.type.kind not in ("datetime", "datetime2", "null")
                and not d.type.is_string
                and d.type.kind not in ("tinyint", "smallint", "int", "bigint", "float")
            ):
                raise SQLError(
                    8116,
                    f"Argument data type {d.type.kind} is invalid for argument 3 of dateadd function.",
                    16,
                )
            fn_d = b.coerce(d, dt_t) if d.type.kind in ("datetime", "datetime2") else _to_dt(d, dt_t)
            kind = dt_t.kind
            if part == "nanosecond" and kind == "datetime":
                raise SQLError(
                    9810,
                    "The datepart nanosecond is not supported by date function dateadd for data "
                    "type datetime.",
                    16,
                )

            def dateadd(c: Ctx, r: Any) -> Any:
                return datetime_add(part, fn_n(c, r), fn_d(c, r), kind)

            return CE(dateadd, dt_t, n.deps or d.deps)
        if name == "DATEPART":
            d = b.compile(args[1])
            fn_d = _to_dt(d, T_DATETIME2 if d.type.kind == "datetime2" else T_DATETIME)

            def datepart(c: Ctx, r: Any) -> Any:
                return date_part(part, fn_d(c, r))

            return CE(datepart, T_INT, d.deps)
        a = b.compile(args[1])
        bb = b.compile(args[2])
        fa = _to_dt(a, T_DATETIME2)
        fb = _to_dt(bb, T_DATETIME2)
        big = name == "DATEDIFF_BIG"

        def datediff(c: Ctx, r: Any) -> Any:
            return datetime_diff(part, fa(c, r), fb(c, r), big)

        return CE(datediff, T_BIGINT if big else T_INT, a.deps or bb.deps)
    compiled = [b.compile(x) for x in args]
    fns = [x.fn for x in compiled]
    deps = any(x.deps for x in compiled)
    if name in ("ISNULL", "COALESCE"):
        rt = compiled[0].type if name == "ISNULL" else T_NULL
        if name == "COALESCE":
            for x in compiled:
                rt = result_type(rt, x.type)
        if rt.kind == "null":
            rt = T_INT
        cfs = [b.coerce(x, rt) for x in compiled]
        if name == "ISNULL" and rt.kind in ("nvarchar", "varchar", "varbinary") and rt.length != MAX:
            f0, f1 = cfs
            length = rt.length

            def isnull_trunc(c: Ctx, r: Any) -> Any:
                v = f0(c, r)
                if v is None:
                    v = f1(c, r)
                    if v is not None and len(v) > length:
                        v = v[:length]
                return v

            return CE(isnull_trunc, rt, deps, compiled[0].binary, compiled[0].colbin)

        def coalesce(c: Ctx, r: Any) -> Any:
            for f in cfs:
                v = f(c, r)
                if v is not None:
                    return v
            return None

        return CE(coalesce, rt, deps, compiled[0].binary, compiled[0].colbin)
    if name == "NULLIF":
        eq = b.compare("=", compiled[0], compiled[1]).fn
        f0 = fns[0]

        def nullif(c: Ctx, r: Any) -> Any:
            return None if eq(c, r) is True else f0(c, r)

        return CE(nullif, compiled[0].type, deps)
    if name == "IIF":
        raise SQLError(
            102, "Incorrect syntax near 'IIF'. (The SQL Server stand-in does not support IIF; use CASE.)", 15
        )
    if name == "HASHBYTES":
        return _hashbytes(compiled, deps)
    if name in ("DATALENGTH", "LEN"):
        x = compiled[0]
        f0 = fns[0]
        kind = x.type.kind
        rt = T_BIGINT if x.type.length == MAX else T_INT
        if name == "DATALENGTH":

            def datalength(c: Ctx, r: Any) -> Any:
                v = f0(c, r)
                if v is None:
                    return None
                if isinstance(v, str):
                    if c.session.engine.profile.datalength_utf8 and kind == "nvarchar":
                        return len(v.encode("utf-8"))  # Babelfish stores nvarchar as UTF-8 (profiles.py)
                    return (
                        len(v.encode("utf-16-le"))
                        if kind == "nvarchar" or kind not in STRING_KINDS
                        else len(v.encode("latin-1", errors="replace"))
                    )
                if isinstance(v, bytes):
                    return len(v)
                if isinstance(v, bool):
                    return 1
                if isinstance(v, int):
                    return {"tinyint": 1, "smallint": 2, "bigint": 8}.get(kind, 4)
                if isinstance(v, float):
                    return 8
                if isinstance(v, datetime):
                    return 8
                return None

            return CE(datalength, rt, deps)
        lf = b.coerce(x, SqlT("nvarchar", MAX)) if not x.type.is_string and kind != "varbinary" else f0

        def len_fn(c: Ctx, r: Any) -> Any:
            v = lf(c, r)
            if v is None:
                return None
            if isinstance(v, bytes):
                return len(v)
            return len(v.rstrip(" "))

        return CE(len_fn, rt, deps)
    if name in ("UPPER", "LOWER", "LTRIM", "RTRIM"):
        x = compiled[0]
        st = x.type if x.type.is_string else SqlT("nvarchar", MAX)
        f0 = b.coerce(x, st) if not x.type.is_string else fns[0]
        op = {
            "UPPER": str.upper,
            "LOWER": str.lower,
            "LTRIM": _lstrip,
            "RTRIM": _rstrip,
        }[name]

        def strfn(c: Ctx, r: Any) -> Any:
            v = f0(c, r)
            return None if v is None else op(v)

        return CE(strfn, st, deps, x.binary, x.colbin)
    if name in ("LEFT", "RIGHT", "SUBSTRING"):
        x = compiled[0]
        st = x.type if x.type.is_string or x.type.kind == "varbinary" else SqlT("nvarchar", MAX)
        f0 = b.coerce(x, st) if st is not x.type else fns[0]
        nfs = [b.coerce(y, T_BIGINT) for y in compiled[1:]]

        def substr(c: Ctx, r: Any) -> Any:
            v = f0(c, r)
            ns = [f(c, r) for f in nfs]
            if v is None or any(n is None for n in ns):
                return None
            if name == "LEFT":
                if ns[0] < 0:
                    raise SQLError(
                        536, "Invalid length parameter passed to the LEFT or SUBSTRING function.", 16
                    )
                return v[: ns[0]]
            if name == "RIGHT":
                if ns[0] < 0:
                    raise SQLError(536, "Invalid length parameter passed to the RIGHT function.", 16)
                return v[len(v) - ns[0] :] if ns[0] else v[:0]
            start, length = ns
            if length < 0:
                raise SQLError(537, "Invalid length parameter passed to the LEFT or SUBSTRING function.", 16)
            s0 = start - 1
            e0 = s0 + length
            return v[max(s0, 0) : max(e0, 0)]

        return CE(substr, st, deps, x.binary, x.colbin)
    if name == "REPLACE":
        st = SqlT("nvarchar", MAX)
        cfs = [b.coerce(x, st) if not x.type.is_string else x.fn for x in compiled]
        binary = b.collation_binary(compiled[0], compiled[1])

        def replace(c: Ctx, r: Any) -> Any:
            vs = [f(c, r) for f in cfs]
            if any(v is None for v in vs):
                return None
            s, old, new = vs
            if old == "":
                return s
            if binary:
                return s.replace(old, new)
            import re as _re

            return _re.sub(_re.escape(old), lambda m: new, s, flags=_re.IGNORECASE)

        return CE(replace, st, deps)
    if name == "CHARINDEX":
        st = SqlT("nvarchar", MAX)
        cfs = [b.coerce(x, st) if not x.type.is_string else x.fn for x in compiled[:2]]
        startf = b.coerce(compiled[2], T_BIGINT) if len(compiled) > 2 else None
        binary = b.collation_binary(compiled[0], compiled[1])

        def charindex(c: Ctx, r: Any) -> Any:
            needle, hay = cfs[0](c, r), cfs[1](c, r)
            if needle is None or hay is None:
                return None
            start = startf(c, r) if startf is not None else 1
            if start is None:
                return None
            s0 = max(int(start) - 1, 0)
            if not binary:
                needle, hay = needle.casefold(), hay.casefold()
            return hay.find(needle, s0) + 1

        return CE(charindex, T_INT, deps)
    if name == "CONCAT":
        st = SqlT("nvarchar", MAX)
        cfs = [b.coerce(x, st) if not x.type.is_string else x.fn for x in compiled]

        def concat(c: Ctx, r: Any) -> Any:
            return "".join(v for v in (f(c, r) for f in cfs) if v is not None)

        return CE(concat, st, deps)
    if name in ("ABS", "FLOOR", "CEILING"):
        x = compiled[0]
        if x.type.kind not in ("tinyint", "smallint", "int", "bigint", "float", "bit", "null"):
            raise SQLError(
                8117, f"Operand data type {x.type.kind} is invalid for {name.lower()} function.", 16
            )
        f0 = fns[0]
        op2: Callable[[Any], Any] = abs if name == "ABS" else (math.floor if name == "FLOOR" else math.ceil)
        is_float = x.type.kind == "float"

        def absfn(c: Ctx, r: Any) -> Any:
            v = f0(c, r)
            if v is None:
                return None
            res = op2(v)
            return float(res) if is_float else int(res)

        return CE(absfn, x.type if x.type.kind != "bit" else T_INT, deps)
    if name == "ROUND":
        f0, f1 = fns

        def roundfn(c: Ctx, r: Any) -> Any:
            v, n = f0(c, r), f1(c, r)
            if v is None or n is None:
                return None
            q = 10 ** int(n)
            res = math.floor(abs(v) * q + 0.5) / q
            res = -res if v < 0 else res
            return type(v)(res) if not isinstance(v, bool) else int(res)

        return CE(roundfn, compiled[0].type, deps)
    if name == "ISNUMERIC":
        f0 = fns[0]

        def isnumeric(c: Ctx, r: Any) -> Any:
            v = f0(c, r)
            if v is None:
                return 0
            if isinstance(v, (int, float)):
                return 1
            try:
                float(str(v).strip())
                return 1
            except ValueError:
                return 0

        return CE(isnumeric, T_INT, deps)
    if name == "OBJECT_ID":
        f0 = fns[0]
        f1o = fns[1] if len(fns) > 1 else None

        def object_id(c: Ctx, r: Any) -> Any:
            text = f0(c, r)
            typ = f1o(c, r) if f1o is not None else None
            if text is None:
                return None
            db_name, schema, tname = _parse_object_name(str(text))
            eng = c.session.engine
            if db_name is not None and db_name.upper() not in {d.upper() for d in eng.databases}:
                return None
            db = eng.database_named(db_name or c.session.database)
            if db is None:
                return None
            t = db.get(schema or "dbo", tname)
            if t is not None:
                if typ is not None and typ.strip().upper() != "U":
                    return None
                return t.object_id
            from .catalog import constraint_object_id

            for tbl in db.tables.values():
                if schema is not None and tbl.schema.upper() != schema.upper():
                    continue
                for ix in tbl.indexes:
                    if (ix.primary_key or ix.unique_constraint) and ix.name.upper() == tname.upper():
                        kind = "PK" if ix.primary_key else "UQ"
                        if typ is not None and typ.strip().upper() != kind:
                            return None
                        return constraint_object_id(tbl.object_id, ix.index_id)
            return None

        return CE(object_id, T_INT, deps)
    if name == "OBJECT_NAME":
        f0 = fns[0]

        def object_name(c: Ctx, r: Any) -> Any:
            oid = f0(c, r)
            if oid is None:
                return None
            db = c.session.engine.database_named(c.session.database)
            t = db.by_id(int(oid)) if db is not None else None
            return t.name if t is not None else None

        return CE(object_name, T_SYSNAME, deps)
    if name in ("INDEXPROPERTY", "COL_NAME", "COL_LENGTH"):
        f0, f1 = fns[0], fns[1]
        f2 = fns[2] if len(fns) > 2 else None

        def table_of(c: Ctx, v: Any) -> Any:
            db = c.session.engine.database_named(c.session.database)
            if db is None or v is None:
                return None
            if isinstance(v, str):
                _dbn, schema, tname = _parse_object_name(v)
                return db.get(schema or "dbo", tname)
            try:
                return db.by_id(int(v))
            except (TypeError, ValueError):
                return None

        if name == "INDEXPROPERTY":

            def indexproperty(c: Ctx, r: Any) -> Any:
                t = table_of(c, f0(c, r))
                iname = f1(c, r)
                prop = f2(c, r) if f2 is not None else None
                if t is None or iname is None or prop is None:
                    return None
                if c.session.engine.profile.rewritten_index_names:
                    return None  # Babelfish: NULL even for an existing index (profiles.py)
                ix = t.find_index(str(iname))
                if ix is None:
                    return None
                p = str(prop).upper()
                if p == "INDEXID":
                    return ix.index_id
                if p == "ISUNIQUE":
                    return int(ix.unique)
                if p == "ISCLUSTERED":
                    return int(ix.clustered)
                if p == "ISDISABLED":
                    return 0
                return None

            return CE(indexproperty, T_INT, deps)
        if name == "COL_NAME":

            def col_name(c: Ctx, r: Any) -> Any:
                t = table_of(c, f0(c, r))
                cid = f1(c, r)
                if t is None or cid is None:
                    return None
                for col in t.columns:
                    if col.column_id == int(cid):
                        return col.name
                return None

            return CE(col_name, T_SYSNAME, deps)

        def col_length(c: Ctx, r: Any) -> Any:
            t = table_of(c, f0(c, r))
            cn = f1(c, r)
            if t is None or cn is None:
                return None
            i = t.col_index.get(str(cn).upper())
            if i is None:
                return None
            from .storage import column_max_length

            return column_max_length(t.columns[i].type)

        return CE(col_length, T_INT, deps)
    if name in ("DB_NAME", "SCHEMA_NAME", "SUSER_SNAME", "USER_NAME", "HOST_NAME", "APP_NAME"):
        f0o = fns[0] if fns else None

        def names(c: Ctx, r: Any) -> Any:
            arg = f0o(c, r) if f0o is not None else None
            if name == "DB_NAME":
                if arg is None:
                    return c.session.database
                dbs = list(c.session.engine.databases)
                i = int(arg)
                return dbs[i - 1] if 1 <= i <= len(dbs) else None
            if name == "SCHEMA_NAME":
                return {None: "dbo", 1: "dbo", 2: "guest", 3: "INFORMATION_SCHEMA", 4: "sys"}.get(arg)
            if name == "SUSER_SNAME":
                return c.session.login
            if name == "USER_NAME":
                return "dbo"
            if name == "HOST_NAME":
                return "standin"
            return "beaker_mssql"

        return CE(names, T_SYSNAME, deps)
    if name in ("DB_ID", "SCHEMA_ID"):
        f0o = fns[0] if fns else None

        def ids(c: Ctx, r: Any) -> Any:
            arg = f0o(c, r) if f0o is not None else None
            if name == "DB_ID":
                dbs = [d.upper() for d in c.session.engine.databases]
                target = (arg or c.session.database).upper()
                return dbs.index(target) + 1 if target in dbs else None
            return {None: 1, "DBO": 1, "GUEST": 2, "INFORMATION_SCHEMA": 3, "SYS": 4}.get(
                arg.upper() if isinstance(arg, str) else arg
            )

        return CE(ids, T_INT, deps)
    if name == "SERVERPROPERTY":
        f0 = fns[0]

        def serverproperty(c: Ctx, r: Any) -> Any:
            p = str(f0(c, r) or "").upper()
            return {
                "PRODUCTVERSION": "15.0.2000.5",
                "PRODUCTLEVEL": "RTM",
                "EDITION": "Stand-in (beaker_mssql)",
                "ENGINEEDITION": str(c.session.engine.profile.engine_edition),
                "STANDINPROFILE": c.session.engine.profile.name,
                "SERVERNAME": "STANDIN",
                "MACHINENAME": "STANDIN",
                "COLLATION": "SQL_Latin1_General_CP1_CI_AS",
                "ISSTANDIN": "1",
            }.get(p)

        return CE(serverproperty, SqlT("nvarchar", 128), deps)
    if name == "APPLOCK_MODE":
        return _applock_mode(fns, deps)
    if name == "APPLOCK_TEST":
        raise SQLError(
            102, f"Incorrect syntax near '{name}'. (The SQL Server stand-in does not support {name}.)", 15
        )
    if name == "XACT_STATE":

        def xact_state(c: Ctx, r: Any) -> Any:
            return 1 if c.session.trancount > 0 else 0

        return CE(xact_state, T_INT)
    raise SQLError(195, f"'{name}' is not a recognized built-in function name.", 15)


def _lstrip(s: str) -> str:
    return s.lstrip(" ")


def _rstrip(s: str) -> str:
    return s.rstrip(" ")


def _to_dt(x: CE, t: SqlT) -> Any:
    f = x.fn
    src = x.type
    if src.kind in ("datetime", "datetime2"):
        return f
    if src.kind == "null":
        return f
    check_implicit(src, t)

    def conv(c: Ctx, r: Any) -> Any:
        v = f(c, r)
        return None if v is None else convert(v, src, t)

    return conv


def aggregate_ref(b: Binder, e: A.Func) -> CE:
    """An aggregate in a grouped query reads its precomputed value from the group row."""
    if b.agg_slots is None:
        raise SQLError(
            147,
            "An aggregate may not appear in the WHERE clause unless it is in a subquery contained in "
            "a HAVING clause or a select list, and the column being aggregated is an outer "
            "reference.",
            15,
        )
    if b.in_agg:
        raise SQLError(
            130,
            "Cannot perform an aggregate function on an expression containing an aggregate or a subquery.",
            16,
        )
    pos = b.agg_slots.get(id(e))
    if pos is None:
        pos = len(b.aggregates)
        b.aggregates.append(e)
        b.agg_slots[id(e)] = pos
    b.in_agg = True
    try:
        arg_t = b.compile(e.args[0]).type if e.args else T_INT
    finally:
        b.in_agg = False
    name = e.name
    if name == "COUNT":
        rt = T_INT
    elif name == "COUNT_BIG":
        rt = T_BIGINT
    elif name in ("SUM", "AVG"):
        if arg_t.kind in STRING_KINDS or arg_t.kind in ("datetime", "datetime2", "varbinary"):
            raise SQLError(
                8117, f"Operand data type {arg_t.kind} is invalid for {name.lower()} operator.", 16
            )
        # SUM/AVG of tinyint, smallint and int return int
        # (learn.microsoft.com/en-us/sql/t-sql/functions/sum-transact-sql)
        rt = T_INT if arg_t.kind in ("bit", "tinyint", "smallint", "int") else arg_t
        if arg_t.kind == "bit":
            raise SQLError(8117, f"Operand data type bit is invalid for {name.lower()} operator.", 16)
    else:
        rt = arg_t
    slot = pos

    def agg_fn(c: Ctx, r: Any) -> Any:
        return r[-1][slot]

    return CE(agg_fn, rt, True)


_ = (T_BIT, T_FLOAT, T_NULL)


# HASHBYTES algorithms the stand-in computes
# (https://learn.microsoft.com/sql/t-sql/functions/hashbytes-transact-sql). SQL Server 2016+ also
# takes the deprecated MD2/MD4/SHA/SHA1; MD2 and MD4 are refused here (a documented limit).
_HASH_ALGORITHMS = {"MD5": "md5", "SHA": "sha1", "SHA1": "sha1", "SHA2_256": "sha256", "SHA2_512": "sha512"}


def _hashbytes(compiled: list[CE], deps: bool) -> CE:
    """HASHBYTES(algorithm, input): nvarchar hashes its UTF-16LE bytes, varchar its code-page bytes.

    SQL Server returns NULL for an unknown algorithm name or a NULL input; since 2016 the input has
    no 8,000-byte limit. The result is varbinary(8000).
    """
    alg, data = compiled
    if data.type.kind not in ("nvarchar", "varchar", "varbinary", "null"):
        raise SQLError(
            8116, f"Argument data type {data.type.kind} is invalid for argument 2 of hashbytes function.", 16
        )
    falg, fdata = alg.fn, data.fn
    kind = data.type.kind

    def hashbytes(c: Ctx, r: Any) -> Any:
        name = falg(c, r)
        value = fdata(c, r)
        if name is None or value is None:
            return None
        algorithm = _HASH_ALGORITHMS.get(str(name).upper())
        if algorithm is None:
            if str(name).upper() in ("MD2", "MD4"):
                raise SQLError(
                    50000, f"The SQL Server stand-in does not compute HASHBYTES('{name}', ...).", 16
                )
            return None
        if isinstance(value, str):
            if kind == "nvarchar":  # Babelfish stores nvarchar as UTF-8 and hashes those bytes
                raw = value.encode("utf-8" if c.session.engine.profile.hashbytes_utf8 else "utf-16-le")
            else:
                raw = value.encode("cp1252", errors="replace")
        else:
            raw = bytes(value)
        return hashlib.new(algorithm, raw).digest()

    return CE(hashbytes, SqlT("varbinary", 8000), deps)


# APPLOCK_MODE's answers (https://learn.microsoft.com/sql/t-sql/functions/applock-mode-transact-sql).
_APPLOCK_MODE_NAMES = {"S": "Shared", "U": "Update", "X": "Exclusive", "IS": "IntentShared",
                       "IX": "IntentExclusive"}


def _applock_mode(fns: list[Callable[[Ctx, Any], Any]], deps: bool) -> CE:
    """APPLOCK_MODE(principal, resource, owner): the mode this session holds for that owner, or NoLock."""
    from .locks import SESSION, TXN

    f_resource, f_owner = fns[1], fns[2]

    def applock_mode(c: Ctx, r: Any) -> Any:
        resource, owner = f_resource(c, r), f_owner(c, r)
        if resource is None or owner is None:
            return None
        session = c.session
        key = ("a", session.database.upper(), str(resource)[:255])
        duration = SESSION if str(owner).upper() == "SESSION" else TXN
        modes = [h[0] for h in session.engine.locks.holds(session.session_id, key) if h[1] == duration]
        order = ("X", "U", "IX", "S", "IS")
        best = next((m for m in order if m in modes), None)
        return "NoLock" if best is None else _APPLOCK_MODE_NAMES[best]

    return CE(applock_mode, SqlT("nvarchar", 32), deps)
