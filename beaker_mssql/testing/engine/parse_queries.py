"""SELECT, table sources (joins, hints, derived tables) and DML: INSERT, UPDATE, DELETE, MERGE, OUTPUT."""

from __future__ import annotations

from typing import Optional, Union

from ..results import SQLError
from . import ast as A
from .lexer import LIT_BIGINT, LIT_DEC, LIT_FLOAT, LIT_INT, LIT_NSTR, LIT_STR
from .parse_base import _DEFAULT, _NOT_AN_ALIAS, RESERVED, STATEMENT_WORDS, TABLE_HINTS
from .parse_expressions import ExpressionParser
from .types import T_INT, T_NULL


class QueryParser(ExpressionParser):
    """SELECT and the DML statements."""

    # ------------------------------------------------------------------ SELECT

    def select_statement(self) -> A.Stmt:
        sel = self.select()
        if self.is_kw("UNION", "EXCEPT", "INTERSECT"):
            self.unsupported(self.tok.upper)
        if self.is_kw("FOR"):
            self.unsupported("FOR XML/JSON/BROWSE")
        if self.is_kw("OPTION"):
            self.unsupported("query hints (OPTION)")
        self.end_statement()
        return sel

    def select(self, subquery: bool = False) -> A.Select:
        line = self.expect_kw("SELECT").line
        distinct = False
        if self.accept_kw("DISTINCT"):
            distinct = True
        else:
            self.accept_kw("ALL")
        top: Optional[A.Expr] = None
        percent = False
        if self.accept_kw("TOP"):
            top = self.top_expr()
            if self.accept_kw("PERCENT"):
                percent = True
            if self.is_kw("WITH") and self.peek().kind == "id" and self.peek().upper == "TIES":
                self.unsupported("TOP ... WITH TIES")
        items = self.select_items()
        sel = A.Select(line, items, top, percent, distinct)
        if self.is_kw("INTO"):
            self.unsupported("SELECT ... INTO")
        if self.accept_kw("FROM"):
            sel.from_ = self.table_source("from")
            while True:
                if self.is_op(","):
                    self.unsupported("comma-separated FROM lists (use JOIN)")
                kind = None
                if self.accept_kw("JOIN"):
                    kind = "INNER"
                elif self.is_kw("INNER"):
                    self.advance()
                    self.expect_kw("JOIN")
                    kind = "INNER"
                elif self.is_kw("LEFT"):
                    self.advance()
                    self.accept_kw("OUTER")
                    self.expect_kw("JOIN")
                    kind = "LEFT"
                elif self.is_kw("CROSS"):
                    self.advance()
                    if self.is_kw("APPLY"):
                        self.unsupported("CROSS APPLY")
                    self.expect_kw("JOIN")
                    kind = "CROSS"
                elif self.is_kw("RIGHT", "FULL"):
                    self.unsupported(f"{self.tok.upper} JOIN")
                elif self.is_kw("OUTER") and self.peek().upper == "APPLY":
                    self.unsupported("OUTER APPLY")
                if kind is None:
                    break
                ref = self.table_source("from")
                on = None
                if kind != "CROSS":
                    self.expect_kw("ON")
                    on = self.condition()
                sel.joins.append(A.Join(kind, ref, on))
        if self.accept_kw("WHERE"):
            sel.where = self.condition()
        if self.is_kw("GROUP"):
            self.advance()
            self.expect_kw("BY")
            sel.group_by.append(self.expr())
            while self.accept_op(","):
                sel.group_by.append(self.expr())
        if self.accept_kw("HAVING"):
            sel.having = self.condition()
        if self.is_kw("ORDER"):
            if subquery:
                pass
            self.advance()
            self.expect_kw("BY")
            while True:
                ot = self.tok
                nt = self.peek()
                if (
                    ot.kind == "lit"
                    and ot.lit_kind == LIT_INT
                    and (
                        nt.kind == "eof"
                        or (nt.kind == "op" and nt.value in (",", ";", ")"))
                        or (nt.kind == "id" and (nt.upper in ("ASC", "DESC") or nt.upper in STATEMENT_WORDS))
                    )
                ):
                    self.advance()
                    pos_v = self.literal_value(ot)
                    e: A.Expr = A.Const(pos_v, T_INT)
                else:
                    e = self.expr()
                desc = False
                if self.accept_kw("DESC"):
                    desc = True
                else:
                    self.accept_kw("ASC")
                sel.order_by.append(A.OrderItem(e, desc))
                if not self.accept_op(","):
                    break
            if self.is_kw("OFFSET"):
                self.unsupported("OFFSET/FETCH")
        assigns = [i.assign is not None for i in items]
        if any(assigns) and not all(assigns):
            raise SQLError(
                141,
                "A SELECT statement that assigns a value to a variable must not be combined with "
                "data-retrieval operations.",
                15,
                1,
                line,
            )
        return sel

    def top_expr(self) -> A.Expr:
        if self.accept_op("("):
            e = self.expr()
            self.expect_op(")")
            return e
        t = self.tok
        if t.kind == "lit" and t.lit_kind in (LIT_INT, LIT_BIGINT, LIT_DEC, LIT_FLOAT):
            self.advance()
            return A.Lit(t.slot, t.lit_kind)
        if t.kind == "var":
            return self.primary()
        self.error()

    def select_items(self) -> list[A.SelectItem]:
        items: list[A.SelectItem] = []
        while True:
            items.append(self.select_item())
            if not self.accept_op(","):
                break
        return items

    def select_item(self) -> A.SelectItem:
        t = self.tok
        if self.accept_op("*"):
            return A.SelectItem(None)
        if (
            t.kind in ("id", "qid")
            and self.peek().kind == "op"
            and self.peek().value == "."
            and self.peek(2).kind == "op"
            and self.peek(2).value == "*"
        ):
            qual = self.ident()
            self.advance()
            self.advance()
            return A.SelectItem(None, star_qualifier=qual)
        if t.kind == "var" and self.peek().kind == "op" and self.peek().value in ("=", "+=", "-="):
            var = self.variable(t)
            self.advance()
            op = self.advance().value
            return A.SelectItem(self.expr(), assign=var, assign_op=op)
        if (
            t.kind == "var"
            and self.peek().kind == "op"
            and self.peek().value in ("+", "-", "*", "/")
            and self.peek(2).kind == "op"
            and self.peek(2).value == "="
        ):
            var = self.variable(t)
            self.advance()
            op = self.advance().value + "="
            self.advance()
            return A.SelectItem(self.expr(), assign=var, assign_op=op)
        if (
            (t.kind == "qid" or (t.kind == "id" and t.upper not in RESERVED))
            and self.peek().kind == "op"
            and self.peek().value == "="
        ):
            eq_alias = self.ident()
            self.advance()
            return A.SelectItem(self.expr(), alias=eq_alias)
        if (
            t.kind == "lit"
            and t.lit_kind in (LIT_STR, LIT_NSTR)
            and self.peek().kind == "op"
            and self.peek().value == "="
        ):
            self.advance()
            self.advance()
            alias_v = self.literal_value(t)
            assert isinstance(alias_v, str)
            return A.SelectItem(self.expr(), alias=alias_v)
        e = self.expr()
        alias: Optional[str] = None
        if self.accept_kw("AS"):
            alias = self.alias_name(required=True)
        elif (self.is_ident() and not self.is_kw(*_NOT_AN_ALIAS, *STATEMENT_WORDS)) or (
            self.tok.kind == "lit" and self.tok.lit_kind in (LIT_STR, LIT_NSTR)
        ):
            alias = self.alias_name(required=True)
        return A.SelectItem(e, alias=alias)

    def alias_name(self, required: bool) -> str:
        t = self.tok
        if t.kind == "lit" and t.lit_kind in (LIT_STR, LIT_NSTR):
            self.advance()
            v = self.literal_value(t)
            assert isinstance(v, str)
            return v
        return self.ident()

    # ------------------------------------------------------------------ table sources

    def obj_name(self) -> A.ObjName:
        line = self.tok.line
        parts: list[Optional[str]] = [self.ident()]
        while self.is_op("."):
            self.advance()
            if self.is_op("."):
                parts.append(None)
                continue
            parts.append(self.ident())
        if len(parts) > 4:
            self.error()
        if len(parts) == 4:
            self.unsupported("four-part (linked server) names")
        name = parts[-1]
        if name is None:
            self.error()
        schema = parts[-2] if len(parts) >= 2 else None
        database = parts[-3] if len(parts) >= 3 else None
        return A.ObjName(name, schema, database, line)

    def hints(self) -> list[str]:
        """WITH ( hint [, ...] ); the WITH has been consumed."""
        self.expect_op("(")
        hints: list[str] = []
        while True:
            t = self.tok
            if t.kind != "id" and t.kind != "qid":
                self.error()
            u = t.upper
            if u == "INDEX":
                self.advance()
                if self.accept_op("="):
                    self.advance()
                else:
                    self.expect_op("(")
                    self.advance()
                    while self.accept_op(","):
                        self.advance()
                    self.expect_op(")")
                hints.append("INDEX")
            elif u in TABLE_HINTS:
                self.advance()
                hints.append(u)
            else:
                raise SQLError(
                    321,
                    f"'{t.value}' is not a recognized table hints option. If it is intended as a parameter "
                    "to a table-valued function or to the CHANGETABLE function, ensure that your database "
                    "compatibility mode is set to 90.",
                    15,
                    1,
                    t.line,
                )
            if not self.accept_op(","):
                if self.is_ident():
                    continue
                break
        self.expect_op(")")
        hs = set(hints)
        if hs & {"NOLOCK", "READUNCOMMITTED"} and hs & {
            "UPDLOCK",
            "XLOCK",
            "HOLDLOCK",
            "SERIALIZABLE",
            "REPEATABLEREAD",
            "READPAST",
            "READCOMMITTED",
            "TABLOCKX",
        }:
            raise SQLError(1047, "Conflicting locking hints specified.", 15, 1, self.tok.line)
        return hints

    def table_source(self, context: str) -> A.TableRef:
        """context: 'from' (name [AS alias] [WITH (hints)]), 'merge' (name [WITH] [AS alias]), 'dml'."""
        t = self.tok
        if self.is_op("("):
            self.advance()
            if self.is_kw("SELECT"):
                sub = self.select(subquery=True)
                self.expect_op(")")
                self.accept_kw("AS")
                dalias = self.ident()
                cols = self.column_alias_list()
                return A.TableRef(
                    A.ObjName(dalias, line=t.line), dalias, [], derived=sub, column_aliases=cols
                )
            if self.is_kw("VALUES"):
                self.advance()
                rows = self.values_rows()
                self.expect_op(")")
                self.accept_kw("AS")
                dalias = self.ident()
                cols = self.column_alias_list()
                if cols is None:
                    raise SQLError(
                        8158 if False else 102, f"Incorrect syntax near '{dalias}'.", 15, 1, t.line
                    )
                for r in rows:
                    if len(r) != len(cols):
                        raise SQLError(
                            8158,
                            f"'{dalias}' has more columns than were specified in the column list."
                            if len(r) > len(cols)
                            else f"'{dalias}' has fewer columns than were specified in the column list.",
                            16,
                            1,
                            t.line,
                        )
                return A.TableRef(
                    A.ObjName(dalias, line=t.line), dalias, [], values=rows, column_aliases=cols
                )
            self.error()
        name = self.obj_name()
        if context == "from" and self.is_op("("):
            self.unsupported("table-valued functions")
        alias: Optional[str] = None
        hints: list[str] = []
        if context == "from":
            if self.accept_kw("AS"):
                alias = self.ident()
            elif self.is_ident() and not self.is_kw(*_NOT_AN_ALIAS, *STATEMENT_WORDS):
                alias = self.ident()
            if self.is_kw("WITH") and self.peek().kind == "op" and self.peek().value == "(":
                self.advance()
                hints = self.hints()
        elif context == "merge":
            if self.is_kw("WITH") and self.peek().kind == "op" and self.peek().value == "(":
                self.advance()
                hints = self.hints()
            if self.accept_kw("AS"):
                alias = self.ident()
            elif self.is_ident() and not self.is_kw(*_NOT_AN_ALIAS, *STATEMENT_WORDS):
                alias = self.ident()
        else:
            if self.is_kw("WITH") and self.peek().kind == "op" and self.peek().value == "(":
                self.advance()
                hints = self.hints()
        return A.TableRef(name, alias, hints)

    def column_alias_list(self) -> Optional[list[str]]:
        if not self.is_op("("):
            return None
        self.advance()
        cols = [self.ident()]
        while self.accept_op(","):
            cols.append(self.ident())
        self.expect_op(")")
        return cols

    def values_rows(self) -> list[list[A.Expr]]:
        rows: list[list[A.Expr]] = []
        line = self.tok.line
        while True:
            self.expect_op("(")
            row = [self.value_expr()]
            while self.accept_op(","):
                row.append(self.value_expr())
            self.expect_op(")")
            rows.append(row)
            if not self.accept_op(","):
                break
        if any(len(r) != len(rows[0]) for r in rows):
            raise SQLError(
                10709,
                "The number of columns for each row in a table value constructor must be the same.",
                16,
                1,
                line,
            )
        if len(rows) > 1000:
            raise SQLError(
                10738,
                "The number of row value expressions in the INSERT statement exceeds the maximum "
                "allowed number of 1000 row values.",
                15,
                1,
                line,
            )
        return rows

    def value_expr(self) -> A.Expr:
        if self.is_kw("DEFAULT"):
            self.advance()
            return A.Const(_DEFAULT, T_NULL)
        return self.expr()

    def output_clause(self) -> Optional[A.OutputClause]:
        if not self.is_kw("OUTPUT"):
            return None
        self.advance()
        items = self.select_items()
        if self.is_kw("INTO"):
            self.unsupported("OUTPUT ... INTO")
        return A.OutputClause(items)

    # ------------------------------------------------------------------ DML

    def insert(self) -> A.Stmt:
        line = self.advance().line
        top = None
        if self.accept_kw("TOP"):
            self.unsupported("INSERT TOP")
        self.accept_kw("INTO")
        table = self.table_source("dml")
        cols: Optional[list[str]] = None
        if self.is_op("("):
            cols = self.column_alias_list()
        output = self.output_clause()
        stmt = A.Insert(line, table, cols, output=output, top=top)
        if self.accept_kw("VALUES"):
            stmt.rows = self.values_rows()
            if cols is not None:
                n = len(stmt.rows[0])
                if n > len(cols):
                    raise SQLError(
                        110,
                        "There are fewer columns in the INSERT statement than values specified in "
                        "the VALUES clause. The number of values in the VALUES clause must match "
                        "the number of columns specified in the INSERT statement.",
                        15,
                        1,
                        line,
                    )
                if n < len(cols):
                    raise SQLError(
                        109,
                        "There are more columns in the INSERT statement than values specified in "
                        "the VALUES clause. The number of values in the VALUES clause must match "
                        "the number of columns specified in the INSERT statement.",
                        15,
                        1,
                        line,
                    )
        elif self.is_kw("SELECT"):
            stmt.select = self.select()
        elif self.is_kw("DEFAULT"):
            self.advance()
            self.expect_kw("VALUES")
            stmt.default_values = True
        elif self.is_kw("EXEC", "EXECUTE"):
            self.unsupported("INSERT ... EXEC")
        else:
            self.error()
        self.end_statement()
        return stmt

    def set_list(self) -> list[tuple[Union[A.Col, A.Var], str, A.Expr]]:
        sets: list[tuple[Union[A.Col, A.Var], str, A.Expr]] = []
        while True:
            t = self.tok
            target: Union[A.Col, A.Var]
            if t.kind == "var":
                target = self.variable(t)
                self.advance()
            else:
                line = t.line
                parts = [self.ident()]
                while self.accept_op("."):
                    parts.append(self.ident())
                target = A.Col(parts, line)
            op = self.assignment_op()
            if (
                isinstance(target, A.Var)
                and self.is_ident()
                and self.peek().kind == "op"
                and self.peek().value == "="
            ):
                self.unsupported("SET @variable = column = expression")
            if self.is_kw("DEFAULT") and isinstance(target, A.Col):
                self.advance()
                sets.append((target, op, A.Const(_DEFAULT, T_NULL)))
            else:
                sets.append((target, op, self.expr()))
            if not self.accept_op(","):
                break
        return sets

    def dml_top(self, verb: str) -> Optional[A.Expr]:
        """UPDATE/DELETE ``TOP (n)``, if any; ``PERCENT`` is not supported there."""
        if not self.accept_kw("TOP"):
            return None
        top = self.top_expr()
        if self.is_kw("PERCENT"):
            self.unsupported(f"TOP ... PERCENT in {verb}")
        return top

    def dml_tail(self, verb: str) -> Optional[A.Expr]:
        """The end UPDATE and DELETE share: no FROM, ``WHERE`` (not CURRENT OF), no OPTION; returns WHERE."""
        if self.is_kw("FROM"):
            self.unsupported(f"{verb} ... FROM")
        where = None
        if self.accept_kw("WHERE"):
            if self.is_kw("CURRENT"):
                self.unsupported("cursors")
            where = self.condition()
        if self.is_kw("OPTION"):
            self.unsupported("query hints (OPTION)")
        self.end_statement()
        return where

    def update(self) -> A.Stmt:
        line = self.advance().line
        top = self.dml_top("UPDATE")
        table = self.table_source("dml")
        self.expect_kw("SET")
        sets = self.set_list()
        output = self.output_clause()
        where = self.dml_tail("UPDATE")
        return A.Update(line, table, sets, where, top, output)

    def delete(self) -> A.Stmt:
        line = self.advance().line
        top = self.dml_top("DELETE")
        self.accept_kw("FROM")
        table = self.table_source("dml")
        output = self.output_clause()
        where = self.dml_tail("DELETE")
        return A.Delete(line, table, where, top, output)

    def merge(self) -> A.Stmt:
        line = self.advance().line
        top = None
        if self.accept_kw("TOP"):
            top = self.top_expr()
        self.accept_kw("INTO")
        target = self.table_source("merge")
        if not self.is_kw("USING"):
            self.error()
        self.advance()
        source = self.table_source("from")
        if source.alias is None and source.derived is None and source.values is None:
            source.alias = None
        self.expect_kw("ON")
        on = self.condition()
        whens: list[A.MergeWhen] = []
        while self.is_kw("WHEN"):
            self.advance()
            w: A.MergeWhen
            if self.accept_kw("NOT"):
                if not self.is_kw("MATCHED"):
                    self.error()
                self.advance()
                by_source = False
                if self.accept_kw("BY"):
                    if self.is_kw("SOURCE"):
                        by_source = True
                    elif not self.is_kw("TARGET"):
                        self.error()
                    self.advance()
                w = A.MergeWhen(False, by_source)
            else:
                if not self.is_kw("MATCHED"):
                    self.error()
                self.advance()
                w = A.MergeWhen(True)
            if self.accept_kw("AND"):
                w.condition = self.condition()
            self.expect_kw("THEN")
            if self.accept_kw("UPDATE"):
                self.expect_kw("SET")
                w.action = "UPDATE"
                for target_col, op, e in self.set_list():
                    if not isinstance(target_col, A.Col):
                        self.unsupported("assigning variables in MERGE")
                    w.sets.append((target_col, op, e))
            elif self.accept_kw("DELETE"):
                w.action = "DELETE"
            elif self.accept_kw("INSERT"):
                w.action = "INSERT"
                if not w.matched and not w.by_source:
                    if self.is_op("("):
                        w.columns = self.column_alias_list()
                    if self.accept_kw("DEFAULT"):
                        self.expect_kw("VALUES")
                        w.default_values = True
                    else:
                        self.expect_kw("VALUES")
                        rows = self.values_rows()
                        if len(rows) != 1:
                            self.error()
                        w.values = rows[0]
                        if w.columns is not None and len(w.columns) != len(w.values):
                            raise SQLError(
                                109 if len(w.columns) > len(w.values) else 110,
                                "There are more columns in the INSERT statement than values specified in the "
                                "VALUES clause. The number of values in the VALUES clause must match the "
                                "number "
                                "of columns specified in the INSERT statement."
                                if len(w.columns) > len(w.values)
                                else "There are fewer columns in the INSERT statement than values specified "
                                "in "
                                "the VALUES clause. The number of values in the VALUES clause must match the "
                                "number of columns specified in the INSERT statement.",
                                15,
                                1,
                                line,
                            )
                else:
                    raise SQLError(
                        10711,
                        "An action of type 'INSERT' is not allowed in the 'WHEN MATCHED' clause "
                        "of a MERGE statement.",
                        15,
                        1,
                        line,
                    )
            else:
                self.error()
            if w.action in ("UPDATE", "DELETE") and not w.matched and not w.by_source:
                raise SQLError(
                    10710,
                    f"An action of type '{w.action}' is not allowed in the 'WHEN NOT MATCHED' "
                    "clause of a MERGE statement.",
                    15,
                    1,
                    line,
                )
            whens.append(w)
        if not whens:
            self.error()
        output = self.output_clause()
        if self.is_kw("OPTION"):
            self.unsupported("query hints (OPTION)")
        if not self.is_op(";"):
            raise SQLError(
                10713, "A MERGE statement must be terminated by a semi-colon (;).", 15, 1, self.tok.line
            )
        return A.Merge(line, target, source, on, whens, output, top)
