"""Compiles AST expressions into Python closures ``fn(ctx, row) -> value``.

Binding (column resolution, type derivation, implicit-conversion checks) happens once per cached plan;
the closures are then run per row. Three-valued logic: predicates return True, False or None (unknown).
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Optional

from ..results import MAX, SQLError
from . import ast as A
from .compiled import CE, Fn
from .functions import compile_function, format_style, global_variable
from .lexer import LIT_BIGINT, LIT_DEC, LIT_FLOAT, LIT_HEX, LIT_INT, LIT_NSTR, LIT_STR
from .storage import ColumnInfo, Table
from .types import (
    BIGINT_MAX,
    BIGINT_MIN,
    INT_RANGES,
    INTEGER_KINDS,
    NUMERIC_KINDS,
    PRECEDENCE,
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
    bin_key,
    check_implicit,
    ci_key,
    convert,
    overflow,
    result_type,
    round_datetime,
)

if TYPE_CHECKING:
    from .context import Ctx

class Source:
    """One table (or derived table / catalog view) visible in a scope."""

    def __init__(
        self,
        name: str,
        columns: list[ColumnInfo],
        offset: int,
        table: Optional[Table] = None,
        aliased: bool = False,
        schema: Optional[str] = None,
    ) -> None:
        self.name = name
        self.upper = name.upper()
        self.columns = columns
        self.col_index = {c.name.upper(): i for i, c in enumerate(columns)}
        self.offset = offset
        self.table = table
        self.aliased = aliased
        self.schema = schema


class Scope:
    def __init__(self, sources: list[Source]) -> None:
        self.sources = sources

    @property
    def width(self) -> int:
        return sum(len(s.columns) for s in self.sources)

    def resolve(self, parts: list[str], line: int) -> tuple[int, ColumnInfo]:
        col = parts[-1].upper()
        if len(parts) == 1:
            found: Optional[tuple[int, ColumnInfo]] = None
            for s in self.sources:
                i = s.col_index.get(col)
                if i is not None:
                    if found is not None:
                        raise SQLError(209, f"Ambiguous column name '{parts[-1]}'.", 16, 1, line)
                    found = (s.offset + i, s.columns[i])
            if found is None:
                raise SQLError(207, f"Invalid column name '{parts[-1]}'.", 16, 1, line)
            return found
        qual = parts[-2].upper()
        schema = parts[-3].upper() if len(parts) >= 3 else None
        for s in self.sources:
            if s.upper == qual and (
                schema is None or (not s.aliased and s.schema is not None and s.schema.upper() == schema)
            ):
                i = s.col_index.get(col)
                if i is None:
                    raise SQLError(207, f"Invalid column name '{parts[-1]}'.", 16, 1, line)
                return s.offset + i, s.columns[i]
        raise SQLError(
            4104, f'The multi-part identifier "{".".join(parts)}" could not be bound.', 16, 1, line
        )


def lit_type(kind: str) -> SqlT:
    if kind.startswith(LIT_NSTR):
        return SqlT("nvarchar", MAX if kind.endswith("m") else 4000)
    if kind.startswith(LIT_STR):
        return SqlT("varchar", MAX if kind.endswith("m") else 8000)
    if kind.startswith(LIT_HEX):
        return SqlT("varbinary", MAX if kind.endswith("m") else 8000)
    if kind == LIT_INT:
        return T_INT
    if kind == LIT_BIGINT:
        return T_BIGINT
    if kind in (LIT_DEC, LIT_FLOAT):
        return T_FLOAT
    raise AssertionError(kind)


# ----------------------------------------------------------------------------- helpers


def tvl_and(fns: list[Fn]) -> Fn:
    if len(fns) == 2:
        f1, f2 = fns

        def and2(c: Ctx, r: Any) -> Any:
            a = f1(c, r)
            if a is False:
                return False
            b = f2(c, r)
            if b is False:
                return False
            return None if a is None or b is None else True

        return and2

    def andn(c: Ctx, r: Any) -> Any:
        unknown = False
        for f in fns:
            v = f(c, r)
            if v is False:
                return False
            if v is None:
                unknown = True
        return None if unknown else True

    return andn


def tvl_not(f: Fn) -> Fn:
    """Three-valued NOT: UNKNOWN (None) stays UNKNOWN (NOT, NOT IN, NOT BETWEEN)."""

    def not_fn(c: Ctx, r: Any) -> Any:
        v = f(c, r)
        return None if v is None else not v

    return not_fn


def tvl_or(fns: list[Fn]) -> Fn:
    def orn(c: Ctx, r: Any) -> Any:
        unknown = False
        for f in fns:
            v = f(c, r)
            if v is True:
                return True
            if v is None:
                unknown = True
        return None if unknown else False

    return orn


_LIKE_CACHE: dict[tuple[str, Optional[str], bool], re.Pattern[str]] = {}


def like_regex(pattern: str, escape: Optional[str], binary: bool) -> re.Pattern[str]:
    key = (pattern, escape, binary)
    rx = _LIKE_CACHE.get(key)
    if rx is not None:
        return rx
    out: list[str] = []
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if escape is not None and ch == escape:
            if i + 1 < n:
                out.append(re.escape(pattern[i + 1]))
                i += 2
                continue
            raise SQLError(8127 if False else 0, "", 16)
        if ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        elif ch == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1 : j]
                if body.startswith("^"):
                    out.append("[^" + body[1:].replace("\\", "\\\\") + "]")
                else:
                    out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j
        else:
            out.append(re.escape(ch))
        i += 1
    flags = re.DOTALL | (0 if binary else re.IGNORECASE)
    rx = re.compile("".join(out) + r"\Z", flags)
    if len(_LIKE_CACHE) > 2000:
        _LIKE_CACHE.clear()
    _LIKE_CACHE[key] = rx
    return rx


def int_result(v: int, t: SqlT) -> int:
    lo, hi = INT_RANGES.get(t.kind, (BIGINT_MIN, BIGINT_MAX))
    if not lo <= v <= hi:
        raise overflow(t.kind if t.kind in INT_RANGES else "bigint")
    return v


def arith(op: str, a: Any, b: Any, t: SqlT) -> Any:
    k = t.kind
    if k in INTEGER_KINDS:
        a = int(a)
        b = int(b)
        if op == "+":
            return int_result(a + b, t if k != "bit" else T_INT)
        if op == "-":
            return int_result(a - b, t if k != "bit" else T_INT)
        if op == "*":
            return int_result(a * b, t if k != "bit" else T_INT)
        if op == "/" or op == "%":
            if b == 0:
                raise SQLError(8134, "Divide by zero error encountered.", 16)
            q = abs(a) // abs(b)
            if (a < 0) != (b < 0):
                q = -q
            if op == "/":
                return int_result(q, t if k != "bit" else T_INT)
            return a - b * q
        if op == "&":
            return a & b
        if op == "|":
            return a | b
        if op == "^":
            return a ^ b
    if k == "float":
        a = float(a)
        b = float(b)
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            if b == 0:
                raise SQLError(8134, "Divide by zero error encountered.", 16)
            return a / b
        if op == "%":
            if b == 0:
                raise SQLError(8134, "Divide by zero error encountered.", 16)
            return math.fmod(a, b)
    raise SQLError(8117, f"Operand data type {k} is invalid for {_OPNAMES.get(op, op)} operator.", 16)


_OPNAMES = {
    "+": "add",
    "-": "subtract",
    "*": "multiply",
    "/": "divide",
    "%": "modulo",
    "&": "boolean AND",
    "|": "boolean OR",
    "^": "boolean XOR",
}


def _incompatible(ta: SqlT, tb: SqlT, op: str) -> SQLError:
    return SQLError(
        402, f"The data types {ta.kind} and {tb.kind} are incompatible in the {_OPNAMES[op]} operator.", 16
    )


def _bin_rstrip(v: Any) -> Any:
    return v.rstrip(b"\x00")


class Binder:
    """Compiles expressions against a scope. ``subquery`` compiles a nested SELECT (set by the executor)."""

    def __init__(
        self,
        scope: Scope,
        var_types: list[SqlT],
        subquery: Callable[[A.Select], tuple[Any, list[SqlT]]],
        agg_slots: Optional[dict[int, int]] = None,
    ) -> None:
        self.scope = scope
        self.var_types = var_types
        self.subquery = subquery
        self.agg_slots = agg_slots  # id(Func) -> row position of the computed aggregate
        self.aggregates: list[A.Func] = []
        self.outside_agg_cols: list[tuple[int, A.Col]] = []
        self.in_agg = False

    def predicate(self, e: A.Expr) -> Fn:
        return self.compile(e).fn

    def compile(self, e: A.Expr) -> CE:
        t = type(e)
        if t is A.Col:
            assert isinstance(e, A.Col)
            pos, col = self.scope.resolve(e.parts, e.line)
            if not self.in_agg:
                self.outside_agg_cols.append((pos, e))

            def col_fn(c: Ctx, r: Any, _p: int = pos) -> Any:
                return r[_p]

            return CE(col_fn, col.type, True, None, col.binary, (pos, col))
        if t is A.Lit:
            assert isinstance(e, A.Lit)
            slot = e.slot

            def lit_fn(c: Ctx, r: Any) -> Any:
                return c.params[slot]

            return CE(lit_fn, lit_type(e.kind))
        if t is A.Const:
            assert isinstance(e, A.Const)
            value = e.value

            def const_fn(c: Ctx, r: Any) -> Any:
                return value

            return CE(const_fn, e.type)
        if t is A.Var:
            assert isinstance(e, A.Var)
            idx = e.index

            def var_fn(c: Ctx, r: Any) -> Any:
                return c.vars[idx]

            return CE(var_fn, self.var_types[idx])
        if t is A.GVar:
            assert isinstance(e, A.GVar)
            return self.global_var(e.name)
        if t is A.Compare:
            assert isinstance(e, A.Compare)
            return self.compare(e.op, self.compile(e.left), self.compile(e.right))
        if t is A.And:
            assert isinstance(e, A.And)
            items = [self.compile(i) for i in e.items]
            return CE(tvl_and([i.fn for i in items]), T_BIT, any(i.deps for i in items))
        if t is A.Or:
            assert isinstance(e, A.Or)
            items = [self.compile(i) for i in e.items]
            return CE(tvl_or([i.fn for i in items]), T_BIT, any(i.deps for i in items))
        if t is A.Not:
            assert isinstance(e, A.Not)
            inner = self.compile(e.operand)
            return CE(tvl_not(inner.fn), T_BIT, inner.deps)
        if t is A.IsNull:
            assert isinstance(e, A.IsNull)
            inner = self.compile(e.operand)
            f = inner.fn
            if e.negated:

                def notnull_fn(c: Ctx, r: Any) -> Any:
                    return f(c, r) is not None

                return CE(notnull_fn, T_BIT, inner.deps)

            def isnull_fn(c: Ctx, r: Any) -> Any:
                return f(c, r) is None

            return CE(isnull_fn, T_BIT, inner.deps)
        if t is A.InList:
            assert isinstance(e, A.InList)
            left = self.compile(e.operand)
            cmps = [self.compare("=", left, self.compile(i)).fn for i in e.items]
            f_or = tvl_or(cmps)
            if e.negated:
                return CE(tvl_not(f_or), T_BIT, True)
            return CE(f_or, T_BIT, True)
        if t is A.InSelect:
            assert isinstance(e, A.InSelect)
            return self.in_select(e)
        if t is A.Like:
            assert isinstance(e, A.Like)
            return self.like(e)
        if t is A.Between:
            assert isinstance(e, A.Between)
            x = self.compile(e.operand)
            lo = self.compare(">=", x, self.compile(e.low)).fn
            hi = self.compare("<=", x, self.compile(e.high)).fn
            both = tvl_and([lo, hi])
            if e.negated:
                return CE(tvl_not(both), T_BIT, True)
            return CE(both, T_BIT, True)
        if t is A.Exists:
            assert isinstance(e, A.Exists)
            run, _types = self.subquery(e.select)

            def exists_fn(c: Ctx, r: Any) -> Any:
                return bool(run(c, 1))

            return CE(exists_fn, T_BIT, False)
        if t is A.Subquery:
            assert isinstance(e, A.Subquery)
            return self.scalar_subquery(e.select)
        if t is A.Unary:
            assert isinstance(e, A.Unary)
            return self.unary(e)
        if t is A.Binary:
            assert isinstance(e, A.Binary)
            return self.binary(e)
        if t is A.Func:
            assert isinstance(e, A.Func)

            return compile_function(self, e)
        if t is A.Cast:
            assert isinstance(e, A.Cast)
            return self.cast(e)
        if t is A.Collate:
            assert isinstance(e, A.Collate)
            inner = self.compile(e.operand)
            if not inner.type.is_string and inner.type.kind != "null":
                raise SQLError(
                    447, "Expression type " + inner.type.kind + " is invalid for COLLATE clause.", 16
                )
            return CE(inner.fn, inner.type, inner.deps, e.binary, inner.colbin, inner.col)
        if t is A.Case:
            assert isinstance(e, A.Case)
            return self.case(e)
        if t is A.DatePart:
            raise SQLError(102, "Incorrect syntax near ','.", 15)
        raise SQLError(102, f"Incorrect syntax near '{type(e).__name__}'.", 15)

    # ------------------------------------------------------------------ pieces

    def global_var(self, name: str) -> CE:

        return global_variable(name)

    def coerce(self, ce: CE, target: SqlT) -> Fn:
        """Implicit conversion of ``ce`` to ``target`` (257 if SQL Server refuses it)."""
        src = ce.type
        f = ce.fn
        if src.kind == target.kind or src.kind == "null":
            return f
        if src.kind in STRING_KINDS and target.kind in STRING_KINDS:
            return f
        check_implicit(src, target)
        tgt = SqlT(target.kind, MAX) if target.kind in ("nvarchar", "varchar", "varbinary") else target

        def conv_fn(c: Ctx, r: Any) -> Any:
            v = f(c, r)
            if v is None:
                return None
            return convert(v, src, tgt)

        return conv_fn

    def collation_binary(self, a: CE, b: CE) -> bool:
        if a.binary is not None:
            return a.binary
        if b.binary is not None:
            return b.binary
        return a.colbin or b.colbin

    def compare(self, op: str, a: CE, b: CE) -> CE:
        ct = result_type(a.type, b.type)
        fa = self.coerce(a, ct)
        fb = self.coerce(b, ct)
        deps = a.deps or b.deps
        key: Optional[Callable[[Any], Any]]
        if ct.kind in STRING_KINDS:
            key = bin_key if self.collation_binary(a, b) else ci_key
        elif ct.kind == "varbinary":
            key = _bin_rstrip
        else:
            key = None
        if op == "=":
            if key is not None:

                def eq_k(c: Ctx, r: Any) -> Any:
                    x = fa(c, r)
                    if x is None:
                        return None
                    y = fb(c, r)
                    if y is None:
                        return None
                    return key(x) == key(y)

                return CE(eq_k, T_BIT, deps)

            def eq(c: Ctx, r: Any) -> Any:
                x = fa(c, r)
                if x is None:
                    return None
                y = fb(c, r)
                if y is None:
                    return None
                return x == y

            return CE(eq, T_BIT, deps)
        import operator

        pyop = {"<>": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}[
            op
        ]
        if key is not None:

            def cmp_k(c: Ctx, r: Any) -> Any:
                x = fa(c, r)
                if x is None:
                    return None
                y = fb(c, r)
                if y is None:
                    return None
                return pyop(key(x), key(y))

            return CE(cmp_k, T_BIT, deps)

        def cmp(c: Ctx, r: Any) -> Any:
            x = fa(c, r)
            if x is None:
                return None
            y = fb(c, r)
            if y is None:
                return None
            return pyop(x, y)

        return CE(cmp, T_BIT, deps)

    def like(self, e: A.Like) -> CE:
        a = self.compile(e.operand)
        p = self.compile(e.pattern)
        esc = self.compile(e.escape) if e.escape is not None else None
        binary = self.collation_binary(a, p)
        str_t = SqlT("nvarchar", MAX)
        fa = self.coerce(a, str_t) if not a.type.is_string else a.fn
        fp = self.coerce(p, str_t) if not p.type.is_string else p.fn
        fe = esc.fn if esc is not None else None
        negated = e.negated

        def like_fn(c: Ctx, r: Any) -> Any:
            v = fa(c, r)
            pat = fp(c, r)
            if v is None or pat is None:
                return None
            escape = None
            if fe is not None:
                escape = fe(c, r)
                if escape is None:
                    return None
                if len(escape) != 1:
                    raise SQLError(
                        506, f'The invalid escape character "{escape}" was specified in a LIKE predicate.', 16
                    )
            m = like_regex(pat.rstrip(" ") if False else pat, escape, binary).match(v) is not None
            if not m and not binary and v.endswith(" "):
                m = like_regex(pat, escape, binary).match(v.rstrip(" ")) is not None
            return (not m) if negated else m

        return CE(like_fn, T_BIT, a.deps or p.deps)

    def unary(self, e: A.Unary) -> CE:
        inner = self.compile(e.operand)
        f = inner.fn
        t = inner.type
        if e.op == "-":
            if t.kind in STRING_KINDS or t.kind == "varbinary" or t.kind in ("datetime", "datetime2"):
                raise SQLError(8117, f"Operand data type {t.kind} is invalid for minus operator.", 16)
            # "- (Negative)": the operand's type, "except that an unsigned tinyint expression is promoted
            # to a smallint result" (learn.microsoft.com/en-us/sql/t-sql/language-elements/
            # negative-transact-sql)
            rt = T_INT if t.kind == "bit" else SqlT("smallint") if t.kind == "tinyint" else t

            def neg(c: Ctx, r: Any) -> Any:
                v = f(c, r)
                if v is None:
                    return None
                if isinstance(v, float):
                    return -v
                return int_result(-int(v), rt) if rt.kind in INTEGER_KINDS else -v

            return CE(neg, rt, inner.deps)
        if t.kind not in INTEGER_KINDS:
            raise SQLError(8117, f"Operand data type {t.kind} is invalid for ~ operator.", 16)

        unsigned = t.kind == "tinyint"  # ~ stays inside tinyint's 0..255

        def inv(c: Ctx, r: Any) -> Any:
            v = f(c, r)
            return None if v is None else (~int(v) & 0xFF if unsigned else ~int(v))

        return CE(inv, t, inner.deps)

    def binary(self, e: A.Binary) -> CE:
        a = self.compile(e.left)
        b = self.compile(e.right)
        op = e.op
        deps = a.deps or b.deps
        ta, tb = a.type, b.type
        if (
            op == "+"
            and (ta.is_string or ta.kind == "null")
            and (tb.is_string or tb.kind == "null")
            and not (ta.kind == "null" and tb.kind == "null")
        ):
            kind = "nvarchar" if "nvarchar" in (ta.kind, tb.kind) else "varchar"
            limit = 4000 if kind == "nvarchar" else 8000
            la = ta.length if ta.kind != "null" else 0
            lb = tb.length if tb.kind != "null" else 0
            length = MAX if MAX in (la, lb) or la + lb > limit else la + lb
            fa, fb = a.fn, b.fn

            def concat(c: Ctx, r: Any) -> Any:
                x = fa(c, r)
                if x is None:
                    return None
                y = fb(c, r)
                if y is None:
                    return None
                return x + y

            return CE(concat, SqlT(kind, length), deps)
        if op == "+" and ta.kind == "varbinary" and tb.kind == "varbinary":
            fa, fb = a.fn, b.fn

            def bconcat(c: Ctx, r: Any) -> Any:
                x = fa(c, r)
                y = fb(c, r)
                return None if x is None or y is None else x + y

            return CE(bconcat, SqlT("varbinary", MAX), deps)
        rt = result_type(ta, tb)
        if rt.kind in ("datetime", "datetime2"):
            if op not in ("+", "-"):
                raise SQLError(
                    8117, f"Operand data type {rt.kind} is invalid for {_OPNAMES[op]} operator.", 16
                )
            if ta.kind in ("datetime", "datetime2") and tb.kind in ("datetime", "datetime2"):
                if rt.kind == "datetime2":
                    raise SQLError(
                        8117, f"Operand data type datetime2 is invalid for {_OPNAMES[op]} operator.", 16
                    )
            fa = self.coerce(a, rt)
            fb = self.coerce(b, rt)
            epoch = datetime(1900, 1, 1)

            def dt_arith(c: Ctx, r: Any) -> Any:
                x = fa(c, r)
                y = fb(c, r)
                if x is None or y is None:
                    return None
                delta = y - epoch
                res = x + delta if op == "+" else x - delta
                try:
                    return round_datetime(res)
                except OverflowError:
                    raise SQLError(
                        517, "Adding a value to a 'datetime' column caused an overflow.", 16
                    ) from None

            return CE(dt_arith, rt, deps)
        if rt.kind in STRING_KINDS or rt.kind == "varbinary" or rt.kind == "null":
            if rt.kind == "null":

                def null_fn(c: Ctx, r: Any) -> Any:
                    return None

                return CE(null_fn, T_INT, deps)
            raise _incompatible(ta, tb, op)
        if rt.kind == "bit" and op in ("+", "-", "*", "/", "%"):
            rt = T_INT
        if op in ("&", "|", "^") and rt.kind == "float":
            raise _incompatible(ta, tb, op)
        fa = self.coerce(a, rt)
        fb = self.coerce(b, rt)

        def num(c: Ctx, r: Any) -> Any:
            x = fa(c, r)
            if x is None:
                return None
            y = fb(c, r)
            if y is None:
                return None
            return arith(op, x, y, rt)

        return CE(num, rt, deps)

    def cast(self, e: A.Cast) -> CE:
        inner = self.compile(e.operand)
        src = inner.type
        dst = e.type
        f = inner.fn
        try_ = e.try_
        if src.kind == "null":
            return CE(inner.fn, dst, inner.deps)
        style_f = self.compile(e.style).fn if e.style is not None else None

        def cast_fn(c: Ctx, r: Any) -> Any:
            v = f(c, r)
            if v is None:
                return None
            if style_f is not None and isinstance(v, datetime) and dst.kind in STRING_KINDS:
                style = style_f(c, r)

                s = format_style(v, style, src.kind)
                return s[: dst.length] if dst.length not in (0, MAX) else s
            try:
                return convert(v, src, dst)
            except SQLError:
                if try_:
                    return None
                raise

        return CE(cast_fn, dst, inner.deps)

    def case(self, e: A.Case) -> CE:
        results = [self.compile(res) for _, res in e.whens]
        else_ = self.compile(e.else_) if e.else_ is not None else None
        rt = T_NULL
        for ce in results + ([else_] if else_ else []):
            rt = result_type(rt, ce.type)
        if rt.kind == "null":
            rt = T_INT
        rfns = [self.coerce(ce, rt) for ce in results]
        efn = self.coerce(else_, rt) if else_ is not None else None
        if e.operand is not None:
            op = self.compile(e.operand)
            conds = [self.compare("=", op, self.compile(w)).fn for w, _ in e.whens]
        else:
            conds = [self.compile(w).fn for w, _ in e.whens]
        pairs = list(zip(conds, rfns))

        def case_fn(c: Ctx, r: Any) -> Any:
            for cond, res in pairs:
                if cond(c, r) is True:
                    return res(c, r)
            return efn(c, r) if efn is not None else None

        return CE(case_fn, rt, True)

    def one_column_subquery(self, sel: A.Select) -> tuple[Any, SqlT]:
        """A subquery used as a value (scalar or IN): its runner and its one column's type (else 116)."""
        run, types = self.subquery(sel)
        if len(types) != 1:
            raise SQLError(
                116,
                "Only one expression can be specified in the select list when the subquery is not "
                "introduced with EXISTS.",
                16,
            )
        return run, types[0]

    def scalar_subquery(self, sel: A.Select) -> CE:
        run, type_ = self.one_column_subquery(sel)

        def sub_fn(c: Ctx, r: Any) -> Any:
            rows = run(c, 2)
            if not rows:
                return None
            if len(rows) > 1:
                raise SQLError(
                    512,
                    "Subquery returned more than 1 value. This is not permitted when the subquery "
                    "follows =, !=, <, <= , >, >= or when the subquery is used as an expression.",
                    16,
                )
            return rows[0][0]

        return CE(sub_fn, type_, False)

    def in_select(self, e: A.InSelect) -> CE:
        run, type_ = self.one_column_subquery(e.select)
        left = self.compile(e.operand)
        holder: list[Any] = [None]

        def cell(c: Ctx, r: Any) -> Any:
            return holder[0]

        cmp = self.compare("=", left, CE(cell, type_)).fn
        negated = e.negated

        def in_fn(c: Ctx, r: Any) -> Any:
            unknown = False
            for row in run(c, 0):
                holder[0] = row[0]
                v = cmp(c, r)
                if v is True:
                    return not negated
                if v is None:
                    unknown = True
            if unknown:
                return None
            return negated

        return CE(in_fn, T_BIT, True)


__all__ = ["CE", "Binder", "Scope", "Source", "lit_type"]
_ = (NUMERIC_KINDS, PRECEDENCE, T_BIGINT, T_DATETIME, T_DATETIME2, T_FLOAT, T_SYSNAME)
