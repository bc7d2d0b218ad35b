"""Expression grammar: search conditions, operators by precedence, CASE, literals, variables and
function calls (with the argument-count and unknown-function errors SQL Server gives)."""

from __future__ import annotations

from ..results import SQLError
from . import ast as A
from .parse_base import AGGREGATES, BOOLEAN_NODES, DATEPARTS, FUNCTIONS, GLOBALS, RESERVED, ParserBase
from .types import BINARY_COLLATIONS, CI_COLLATIONS, T_NULL


class ExpressionParser(ParserBase):
    """Expressions and search conditions; statements are parsed by the subclasses."""

    # ------------------------------------------------------------------ expressions

    def condition(self) -> A.Expr:
        """A search condition (WHERE, ON, IF, WHEN ...): 4145 unless it is a boolean expression."""
        return self.bool_operand(self.or_expr())

    def or_expr(self) -> A.Expr:
        e = self.and_expr()
        if self.is_kw("OR"):
            items = [e]
            while self.accept_kw("OR"):
                items.append(self.bool_operand(self.and_expr()))
            self.bool_operand(e)
            return A.Or(items)
        return e

    def and_expr(self) -> A.Expr:
        e = self.not_expr()
        if self.is_kw("AND"):
            items = [e]
            while self.accept_kw("AND"):
                items.append(self.bool_operand(self.not_expr()))
            self.bool_operand(e)
            return A.And(items)
        return e

    def bool_operand(self, e: A.Expr) -> A.Expr:
        """``e`` if it is boolean (a comparison, AND/OR/NOT, EXISTS ...), else SQL Server's 4145."""
        if not isinstance(e, BOOLEAN_NODES):
            t = self.tok if self.tok.kind != "eof" else self.toks[self.pos - 1]
            near = t.value if t.kind != "lit" else t.raw
            raise SQLError(
                4145,
                f"An expression of non-boolean type specified in a context where a condition is "
                f"expected, near '{near}'.",
                15,
                1,
                t.line,
            )
        return e

    def not_expr(self) -> A.Expr:
        if self.accept_kw("NOT"):
            return A.Not(self.bool_operand(self.not_expr()))
        return self.predicate()

    def predicate(self) -> A.Expr:
        if self.is_kw("EXISTS"):
            self.advance()
            self.expect_op("(")
            sel = self.select(subquery=True)
            self.expect_op(")")
            return A.Exists(sel)
        left = self.expr_or_bool()
        if isinstance(left, BOOLEAN_NODES):
            return left
        t = self.tok
        if t.kind == "op":
            v = t.value
            if v in ("=", "<>", "!=", "<", "<=", ">", ">=", "!<", "!>"):
                self.advance()
                if self.is_kw("ALL", "ANY", "SOME"):
                    self.unsupported("ALL/ANY/SOME")
                right = self.expr()
                op = {"!=": "<>", "!<": ">=", "!>": "<="}.get(v, v)
                return A.Compare(op, left, right)
            return left
        if t.kind != "id":
            return left
        negated = False
        if t.upper == "NOT" and self.peek().kind == "id" and self.peek().upper in ("IN", "LIKE", "BETWEEN"):
            self.advance()
            negated = True
            t = self.tok
        u = t.upper
        if u == "IS":
            self.advance()
            neg = self.accept_kw("NOT")
            self.expect_kw("NULL")
            return A.IsNull(left, neg)
        if u == "IN":
            self.advance()
            self.expect_op("(")
            if self.is_kw("SELECT"):
                sel = self.select(subquery=True)
                self.expect_op(")")
                return A.InSelect(left, sel, negated)
            items = [self.expr()]
            while self.accept_op(","):
                items.append(self.expr())
            self.expect_op(")")
            return A.InList(left, items, negated)
        if u == "LIKE":
            self.advance()
            pattern = self.expr()
            esc = None
            if self.accept_kw("ESCAPE"):
                esc = self.expr()
            return A.Like(left, pattern, esc, negated)
        if u == "BETWEEN":
            self.advance()
            low = self.expr()
            self.expect_kw("AND")
            high = self.expr()
            return A.Between(left, low, high, negated)
        if negated:
            self.error()
        return left

    def expr(self) -> A.Expr:
        e = self.expr_or_bool()
        if isinstance(e, BOOLEAN_NODES):
            self.error()
        return e

    def expr_or_bool(self) -> A.Expr:
        e = self.term()
        while True:
            t = self.tok
            if t.kind == "op" and t.value in ("+", "-", "&", "|", "^"):
                if self.peek().kind == "op" and self.peek().value == "=":
                    return e
                self.advance()
                e = A.Binary(t.value, self.scalar(e), self.scalar(self.term()))
            else:
                return e

    def scalar(self, e: A.Expr) -> A.Expr:
        if isinstance(e, BOOLEAN_NODES):
            self.error()
        return e

    def term(self) -> A.Expr:
        e = self.unary()
        while True:
            t = self.tok
            if t.kind == "op" and t.value in ("*", "/", "%"):
                if self.peek().kind == "op" and self.peek().value == "=":
                    return e
                self.advance()
                e = A.Binary(t.value, self.scalar(e), self.scalar(self.unary()))
            else:
                return e

    def unary(self) -> A.Expr:
        t = self.tok
        if t.kind == "op" and t.value in ("-", "+", "~"):
            self.advance()
            operand = self.scalar(self.unary())
            if t.value == "+":
                return operand
            return A.Unary(t.value, operand)
        e = self.primary()
        while self.is_kw("COLLATE"):
            self.advance()
            c = self.tok
            if c.kind not in ("id", "qid"):
                self.error()
            self.advance()
            if c.upper in BINARY_COLLATIONS:
                e = A.Collate(e, c.upper, True)
            elif c.upper in CI_COLLATIONS:
                e = A.Collate(e, c.upper, False)
            else:
                self.unsupported(f"the collation {c.value}", c)
        return e

    def primary(self) -> A.Expr:
        t = self.tok
        k = t.kind
        if k == "lit":
            self.advance()
            return A.Lit(t.slot, t.lit_kind)
        if k == "var":
            self.advance()
            return self.variable(t)
        if k == "gvar":
            self.advance()
            if t.upper not in GLOBALS:
                raise SQLError(137, f'Must declare the scalar variable "{t.value}".', 15, 1, t.line)
            return A.GVar(t.upper)
        if k == "op":
            if t.value == "(":
                self.advance()
                if self.is_kw("SELECT"):
                    sel = self.select(subquery=True)
                    self.expect_op(")")
                    return A.Subquery(sel)
                e = self.or_expr()
                self.expect_op(")")
                return e
            if t.value == "{":
                self.unsupported("ODBC escape sequences")
            self.error()
        if k == "qid":
            return self.column_ref()
        if k != "id":
            self.error()
        u = t.upper
        if u == "NULL":
            self.advance()
            return A.Const(None, T_NULL)
        if u == "CASE":
            return self.case()
        if u in ("CAST", "TRY_CAST"):
            self.advance()
            self.expect_op("(")
            operand = self.expr()
            self.expect_kw("AS")
            typ = self.data_type("cast")
            self.expect_op(")")
            return A.Cast(operand, typ, None, u == "TRY_CAST")
        if u in ("CONVERT", "TRY_CONVERT"):
            self.advance()
            self.expect_op("(")
            typ = self.data_type("cast")
            self.expect_op(",")
            operand = self.expr()
            style = None
            if self.accept_op(","):
                style = self.expr()
            self.expect_op(")")
            return A.Cast(operand, typ, style, u == "TRY_CONVERT")
        if u == "CURRENT_TIMESTAMP":
            self.advance()
            return A.Func("GETDATE", [], line=t.line)
        if u in ("CURRENT_USER", "SESSION_USER", "USER", "SYSTEM_USER"):
            self.advance()
            return A.Func("USER_NAME" if u != "SYSTEM_USER" else "SUSER_SNAME", [], line=t.line)
        nxt = self.peek()
        if nxt.kind == "op" and nxt.value == "(":
            if u in RESERVED and u not in ("COALESCE", "NULLIF", "LEFT", "RIGHT"):
                self.error()
            return self.function_call()
        if u in RESERVED:
            self.error()
        return self.column_ref()

    def column_ref(self) -> A.Expr:
        line = self.tok.line
        parts = [self.ident()]
        while self.is_op("."):
            self.advance()
            if self.is_op("*"):
                self.error()
            parts.append(self.ident())
        if self.is_op("("):
            self.unsupported("user-defined functions")
        if len(parts) > 4:
            self.error()
        return A.Col(parts, line)

    def case(self) -> A.Expr:
        self.advance()
        operand = None
        if not self.is_kw("WHEN"):
            operand = self.expr()
        whens: list[tuple[A.Expr, A.Expr]] = []
        while self.accept_kw("WHEN"):
            cond = self.expr() if operand is not None else self.condition()
            self.expect_kw("THEN")
            whens.append((cond, self.expr()))
        if not whens:
            self.error()
        else_ = None
        if self.accept_kw("ELSE"):
            else_ = self.expr()
        self.expect_kw("END")
        return A.Case(operand, whens, else_)

    def function_call(self) -> A.Expr:
        t = self.advance()
        u = t.upper
        self.expect_op("(")
        if u not in FUNCTIONS:
            if u in (
                "NEWID",
                "ROW_NUMBER",
                "RANK",
                "DENSE_RANK",
                "STRING_AGG",
                "FORMAT",
                "JSON_VALUE",
                "CHOOSE",
                "STUFF",
                "PATINDEX",
                "REVERSE",
                "REPLICATE",
                "SPACE",
                "STR",
                "CHAR",
                "NCHAR",
                "ASCII",
                "UNICODE",
                "SQRT",
                "POWER",
                "EXP",
                "LOG",
                "RAND",
                "CHECKSUM",
                "DATENAME",
                "YEAR",
                "MONTH",
                "DAY",
                "EOMONTH",
                "DATEFROMPARTS",
                "SWITCHOFFSET",
                "TODATETIMEOFFSET",
                "SYSDATETIMEOFFSET",
                "ERROR_NUMBER",
                "ERROR_MESSAGE",
                "ERROR_SEVERITY",
                "ERROR_STATE",
                "ERROR_LINE",
                "SCOPE_IDENT",
                "SCOPE_IDENTITY",
                "IDENT_CURRENT",
                "OBJECTPROPERTY",
                "DATABASEPROPERTYEX",
                "TYPE_NAME",
                "TYPE_ID",
                "HAS_PERMS_BY_NAME",
            ):
                self.unsupported(f"the function {u}", t)
            raise SQLError(195, f"'{t.value}' is not a recognized built-in function name.", 15, 1, t.line)
        args: list[A.Expr] = []
        star = False
        distinct = False
        if u in ("COUNT", "COUNT_BIG") and self.is_op("*"):
            self.advance()
            star = True
        elif not self.is_op(")"):
            if u in AGGREGATES:
                if self.accept_kw("DISTINCT"):
                    distinct = True
                else:
                    self.accept_kw("ALL")
            if u in ("DATEADD", "DATEDIFF", "DATEDIFF_BIG", "DATEPART"):
                p = self.tok
                if p.kind not in ("id", "qid"):
                    self.error()
                self.advance()
                part = DATEPARTS.get(p.upper)
                if part is None:
                    raise SQLError(155, f"'{p.value}' is not a recognized {u.lower()} option.", 15, 1, p.line)
                args.append(A.DatePart(part))
                self.expect_op(",")
            args.append(self.expr())
            while self.accept_op(","):
                args.append(self.expr())
        self.expect_op(")")
        lo, hi = FUNCTIONS[u]
        n = len(args) + (1 if star else 0)
        if n < lo or (hi >= 0 and n > hi):
            if lo == hi:
                raise SQLError(174, f"The {u.lower()} function requires {lo} argument(s).", 15, 1, t.line)
            raise SQLError(
                189,
                f"The {u.lower()} function requires {lo} to {hi if hi >= 0 else 254} arguments.",
                15,
                1,
                t.line,
            )
        if self.is_kw("OVER"):
            self.unsupported("window functions (OVER)")
        if self.is_kw("WITHIN"):
            self.unsupported("WITHIN GROUP")
        return A.Func(u, args, star, distinct, t.line)
