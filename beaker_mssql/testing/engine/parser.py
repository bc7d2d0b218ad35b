"""Recursive-descent parser for the supported T-SQL subset.

Strict on purpose: anything SQL Server would reject is rejected here with SQL Server's error number
(102/156 syntax, 137 undeclared variable, 195 unknown function/option, 174 argument count, ...);
anything valid but outside the subset is rejected with 102 and a note saying the stand-in does not
support it. The whole batch is parsed before anything runs, as SQL Server compiles a batch first.
"""

from __future__ import annotations

from typing import Callable, NoReturn, Optional, Union

from ..results import MAX, SQLError
from . import ast as A
from .lexer import (
    LIT_BIGINT,
    LIT_DEC,
    LIT_FLOAT,
    LIT_HEX,
    LIT_INT,
    LIT_NSTR,
    LIT_STR,
    LiteralValue,
    Token,
    tokenize,
)
from .types import (
    BINARY_COLLATIONS,
    CI_COLLATIONS,
    KNOWN_UNSUPPORTED_TYPES,
    T_BIGINT,
    T_FLOAT,
    T_INT,
    T_NULL,
    SqlT,
    simple_type,
    sized_type_info,
)

RESERVED = frozenset(
    """
ADD ALL ALTER AND ANY AS ASC AUTHORIZATION BACKUP BEGIN BETWEEN BREAK BROWSE BULK BY CASCADE CASE CHECK
CHECKPOINT CLOSE CLUSTERED COALESCE COLLATE COLUMN COMMIT COMPUTE CONSTRAINT CONTAINS CONTAINSTABLE CONTINUE
CONVERT CREATE CROSS CURRENT CURRENT_DATE CURRENT_TIME CURRENT_TIMESTAMP CURRENT_USER CURSOR DATABASE DBCC
DEALLOCATE DECLARE DEFAULT DELETE DENY DESC DISK DISTINCT DISTRIBUTED DOUBLE DROP DUMP ELSE END ERRLVL ESCAPE
EXCEPT EXEC EXECUTE EXISTS EXIT EXTERNAL FETCH FILE FILLFACTOR FOR FOREIGN FREETEXT FREETEXTTABLE FROM FULL
FUNCTION GOTO GRANT GROUP HAVING HOLDLOCK IDENTITY IDENTITY_INSERT IDENTITYCOL IF IN INDEX INNER INSERT
INTERSECT INTO IS JOIN KEY KILL LEFT LIKE LINENO LOAD MERGE NATIONAL NOCHECK NONCLUSTERED NOT NULL NULLIF OF
OFF OFFSETS ON OPEN OPENDATASOURCE OPENQUERY OPENROWSET OPENXML OPTION OR ORDER OUTER OVER PERCENT PIVOT PLAN
PRECISION PRIMARY PRINT PROC PROCEDURE PUBLIC RAISERROR READ READTEXT RECONFIGURE REFERENCES REPLICATION
RESTORE RESTRICT RETURN REVERT REVOKE RIGHT ROLLBACK ROWCOUNT ROWGUIDCOL RULE SAVE SCHEMA SECURITYAUDIT SELECT
SEMANTICKEYPHRASETABLE SEMANTICSIMILARITYDETAILSTABLE SEMANTICSIMILARITYTABLE SESSION_USER SET SETUSER
SHUTDOWN SOME STATISTICS SYSTEM_USER TABLE TABLESAMPLE TEXTSIZE THEN TO TOP TRAN TRANSACTION TRIGGER TRUNCATE
TRY_CONVERT TSEQUAL UNION UNIQUE UNPIVOT UPDATE UPDATETEXT USE USER VALUES VARYING VIEW WAITFOR WHEN WHERE
WHILE WITH WRITETEXT
""".split()
)

# Words that begin a statement (used to end optional clauses such as a transaction name).
STATEMENT_WORDS = frozenset(
    """
SELECT INSERT UPDATE DELETE MERGE CREATE DROP TRUNCATE IF WHILE BREAK CONTINUE BEGIN END DECLARE SET EXEC
EXECUTE USE COMMIT ROLLBACK SAVE PRINT THROW RAISERROR RETURN ALTER WITH ELSE GO WAITFOR GOTO
""".split()
)

ON_OFF_OPTIONS = frozenset(
    """
NOCOUNT XACT_ABORT ARITHABORT ARITHIGNORE CONCAT_NULL_YIELDS_NULL ANSI_NULLS ANSI_NULL_DFLT_ON
ANSI_NULL_DFLT_OFF ANSI_PADDING ANSI_WARNINGS ANSI_DEFAULTS CURSOR_CLOSE_ON_COMMIT
QUOTED_IDENTIFIER IMPLICIT_TRANSACTIONS
NUMERIC_ROUNDABORT FMTONLY NOEXEC PARSEONLY FORCEPLAN SHOWPLAN_ALL SHOWPLAN_TEXT SHOWPLAN_XML
STATISTICS NO_BROWSETABLE
""".split()
)

TABLE_HINTS = frozenset(
    """
NOLOCK READUNCOMMITTED READCOMMITTED READCOMMITTEDLOCK REPEATABLEREAD SERIALIZABLE HOLDLOCK UPDLOCK XLOCK
ROWLOCK PAGLOCK TABLOCK TABLOCKX READPAST NOWAIT FORCESEEK FORCESCAN NOEXPAND
""".split()
)

DATEPARTS = {
    "YEAR": "year",
    "YY": "year",
    "YYYY": "year",
    "QUARTER": "quarter",
    "QQ": "quarter",
    "Q": "quarter",
    "MONTH": "month",
    "MM": "month",
    "M": "month",
    "DAYOFYEAR": "dayofyear",
    "DY": "dayofyear",
    "Y": "dayofyear",
    "DAY": "day",
    "DD": "day",
    "D": "day",
    "WEEK": "week",
    "WK": "week",
    "WW": "week",
    "WEEKDAY": "weekday",
    "DW": "weekday",
    "HOUR": "hour",
    "HH": "hour",
    "MINUTE": "minute",
    "MI": "minute",
    "N": "minute",
    "SECOND": "second",
    "SS": "second",
    "S": "second",
    "MILLISECOND": "millisecond",
    "MS": "millisecond",
    "MICROSECOND": "microsecond",
    "MCS": "microsecond",
    "NANOSECOND": "nanosecond",
    "NS": "nanosecond",
}

# name -> (min args, max args); -1 = any
FUNCTIONS: dict[str, tuple[int, int]] = {
    "GETDATE": (0, 0),
    "GETUTCDATE": (0, 0),
    "SYSUTCDATETIME": (0, 0),
    "SYSDATETIME": (0, 0),
    "DATEADD": (3, 3),
    "DATEDIFF": (3, 3),
    "DATEDIFF_BIG": (3, 3),
    "DATEPART": (2, 2),
    "OBJECT_ID": (1, 2),
    "OBJECT_NAME": (1, 2),
    "INDEXPROPERTY": (3, 3),
    "COL_NAME": (2, 2),
    "COL_LENGTH": (2, 2),
    "DATALENGTH": (1, 1),
    "HASHBYTES": (2, 2),
    "LEN": (1, 1),
    "ISNULL": (2, 2),
    "COALESCE": (2, -1),
    "NULLIF": (2, 2),
    "UPPER": (1, 1),
    "LOWER": (1, 1),
    "LTRIM": (1, 1),
    "RTRIM": (1, 1),
    "SUBSTRING": (3, 3),
    "LEFT": (2, 2),
    "RIGHT": (2, 2),
    "REPLACE": (3, 3),
    "CHARINDEX": (2, 3),
    "CONCAT": (2, -1),
    "ABS": (1, 1),
    "COUNT": (1, 1),
    "COUNT_BIG": (1, 1),
    "MIN": (1, 1),
    "MAX": (1, 1),
    "SUM": (1, 1),
    "AVG": (1, 1),
    "DB_NAME": (0, 1),
    "DB_ID": (0, 1),
    "SCHEMA_NAME": (0, 1),
    "SCHEMA_ID": (0, 1),
    "SUSER_SNAME": (0, 0),
    "USER_NAME": (0, 0),
    "APPLOCK_MODE": (3, 3),
    "APPLOCK_TEST": (4, 4),
    "SERVERPROPERTY": (1, 1),
    "ISNUMERIC": (1, 1),
    "IIF": (3, 3),
    "CURRENT_TIMESTAMP": (0, 0),
    "FLOOR": (1, 1),
    "CEILING": (1, 1),
    "ROUND": (2, 2),
    "HOST_NAME": (0, 0),
    "APP_NAME": (0, 0),
    "XACT_STATE": (0, 0),
}
AGGREGATES = frozenset({"COUNT", "COUNT_BIG", "MIN", "MAX", "SUM", "AVG"})

GLOBALS = frozenset(
    {
        "@@ROWCOUNT",
        "@@TRANCOUNT",
        "@@SPID",
        "@@ERROR",
        "@@VERSION",
        "@@IDENTITY",
        "@@SERVERNAME",
        "@@LOCK_TIMEOUT",
        "@@SERVICENAME",
        "@@LANGUAGE",
        "@@TEXTSIZE",
        "@@DATEFIRST",
        "@@OPTIONS",
        "@@MAX_PRECISION",
        "@@NESTLEVEL",
        "@@PROCID",
        "@@FETCH_STATUS",
        "@@DBTS",
    }
)

BOOLEAN_NODES = (A.Compare, A.And, A.Or, A.Not, A.IsNull, A.InList, A.InSelect, A.Like, A.Between, A.Exists)

_NOT_AN_ALIAS = frozenset({"OUTPUT", "USING", "WHEN", "MATCHED"})

_LIT_TYPES = {
    LIT_INT: T_INT,
    LIT_BIGINT: T_BIGINT,
    LIT_DEC: T_FLOAT,
    LIT_FLOAT: T_FLOAT,
}


def unsupported(what: str, near: str, line: int) -> SQLError:
    return SQLError(
        102,
        f"Incorrect syntax near '{near}'. (The SQL Server stand-in does not support {what}.)",
        15,
        1,
        line,
    )


class Parser:
    def __init__(self, tokens: list[Token], values: list[LiteralValue]) -> None:
        self.toks = tokens
        self.pos = 0
        self.values = values
        self.structural: list[tuple[int, LiteralValue]] = []
        self.vars: dict[str, A.Var] = {}
        self.var_types: list[SqlT] = []
        self.loop_depth = 0

    # ------------------------------------------------------------------ token helpers

    @property
    def tok(self) -> Token:
        return self.toks[self.pos]

    def peek(self, n: int = 1) -> Token:
        i = min(self.pos + n, len(self.toks) - 1)
        return self.toks[i]

    def advance(self) -> Token:
        t = self.toks[self.pos]
        if t.kind != "eof":
            self.pos += 1
        return t

    def is_kw(self, *words: str) -> bool:
        t = self.toks[self.pos]
        return t.kind == "id" and t.upper in words

    def is_op(self, op: str) -> bool:
        t = self.toks[self.pos]
        return t.kind == "op" and t.value == op

    def accept_kw(self, *words: str) -> bool:
        if self.is_kw(*words):
            self.pos += 1
            return True
        return False

    def accept_op(self, op: str) -> bool:
        if self.is_op(op):
            self.pos += 1
            return True
        return False

    def expect_kw(self, word: str) -> Token:
        if not self.is_kw(word):
            self.error()
        return self.advance()

    def expect_op(self, op: str) -> Token:
        if not self.is_op(op):
            self.error()
        return self.advance()

    def error(self, tok: Optional[Token] = None) -> NoReturn:
        t = tok or self.tok
        if t.kind == "eof":
            prev = self.toks[self.pos - 1] if self.pos > 0 else t
            t = prev
        raise self.syntax_error(t)

    @staticmethod
    def syntax_error(t: Token) -> SQLError:
        if t.kind == "id" and t.upper in RESERVED:
            return SQLError(156, f"Incorrect syntax near the keyword '{t.value}'.", 15, 1, t.line)
        if t.kind == "qid":
            return SQLError(102, f"Incorrect syntax near '{t.value}'.", 15, 1, t.line)
        if t.kind == "lit":
            return SQLError(102, f"Incorrect syntax near '{t.raw or t.value}'.", 15, 1, t.line)
        return SQLError(102, f"Incorrect syntax near '{t.value}'.", 15, 1, t.line)

    def unsupported(self, what: str, tok: Optional[Token] = None) -> NoReturn:
        t = tok or self.tok
        raise unsupported(what, t.value or (self.toks[self.pos - 1].value if self.pos else ""), t.line)

    def assignment_op(self) -> str:
        """Read ``=`` or a compound ``+= -= *= /= %=`` (shared by UPDATE ... SET and SET @v).

        The lexer yields a compound operator as two ``op`` tokens; anything else is the usual
        102 at the current token.
        """
        t = self.tok
        if t.kind == "op" and t.value == "=":
            self.advance()
            return "="
        if (
            t.kind == "op"
            and t.value in ("+", "-", "*", "/", "%")
            and self.peek().kind == "op"
            and self.peek().value == "="
        ):
            self.advance()
            self.advance()
            return t.value + "="
        self.error()

    def ident(self) -> str:
        """A (non-reserved or quoted) identifier."""
        t = self.tok
        if t.kind == "qid":
            self.pos += 1
            return t.value
        if t.kind == "id" and t.upper not in RESERVED:
            self.pos += 1
            return t.value
        self.error()

    def is_ident(self) -> bool:
        t = self.tok
        return t.kind == "qid" or (t.kind == "id" and t.upper not in RESERVED)

    def literal_value(self, tok: Token) -> LiteralValue:
        """A literal needed at parse time: its value becomes part of the cache identity."""
        v = self.values[tok.slot]
        self.structural.append((tok.slot, v))
        return v

    def int_literal(self) -> int:
        t = self.tok
        if t.kind != "lit" or t.lit_kind not in (LIT_INT, LIT_BIGINT):
            self.error()
        self.pos += 1
        v = self.literal_value(t)
        assert isinstance(v, int)
        return v

    # ------------------------------------------------------------------ batch

    def parse_batch(self) -> A.Batch:
        stmts: list[A.Stmt] = []
        first = True
        while True:
            while self.accept_op(";"):
                pass
            if self.tok.kind == "eof":
                break
            t = self.tok
            if (
                first
                and t.kind in ("id", "qid")
                and (t.kind == "qid" or (t.upper not in STATEMENT_WORDS and t.upper not in RESERVED))
            ):
                st = self.parse_exec_body(t.line, None)
                st.span = (t.pos, self.toks[self.pos - 1].end, 0)
                stmts.append(st)
            else:
                stmts.append(self.statement())
            first = False
        return A.Batch(stmts, len(self.var_types), self.var_types)

    def statement(self) -> A.Stmt:
        t = self.tok
        if t.kind != "id":
            if self.is_op("("):
                self.unsupported("a parenthesized query expression")
            self.error()
        u = t.upper
        handler: Optional[Callable[[], A.Stmt]] = {
            "SELECT": self.select_statement,
            "INSERT": self.insert,
            "UPDATE": self.update,
            "DELETE": self.delete,
            "MERGE": self.merge,
            "CREATE": self.create,
            "DROP": self.drop,
            "TRUNCATE": self.truncate,
            "IF": self.if_,
            "WHILE": self.while_,
            "BEGIN": self.begin,
            "DECLARE": self.declare,
            "SET": self.set_,
            "EXEC": self.exec_,
            "EXECUTE": self.exec_,
            "USE": self.use,
            "COMMIT": self.commit_rollback,
            "ROLLBACK": self.commit_rollback,
            "SAVE": self.save,
            "PRINT": self.print_,
            "RAISERROR": self.raiserror,
            "THROW": self.throw,
            "RETURN": self.return_,
            "BREAK": self.break_,
            "CONTINUE": self.continue_,
        }.get(u)
        if handler is None:
            if u in (
                "ALTER",
                "WITH",
                "WAITFOR",
                "GOTO",
                "GRANT",
                "DENY",
                "REVOKE",
                "OPEN",
                "FETCH",
                "CLOSE",
                "DEALLOCATE",
                "KILL",
                "DBCC",
                "BACKUP",
                "RESTORE",
                "BULK",
                "CHECKPOINT",
                "RECONFIGURE",
                "SHUTDOWN",
                "READTEXT",
                "WRITETEXT",
                "UPDATETEXT",
                "SETUSER",
                "REVERT",
            ):
                self.unsupported(f"the {u} statement")
            self.error()
        start = self.pos
        stmt = handler()
        end_tok = self.toks[self.pos - 1] if self.pos > start else t
        first_slot = 0
        for i in range(start, self.pos):
            if self.toks[i].kind == "lit":
                first_slot = self.toks[i].slot
                break
        stmt.span = (t.pos, end_tok.end, first_slot)
        return stmt

    def end_statement(self) -> None:
        """After a statement: ';', EOF, or the start of another statement."""
        t = self.tok
        if t.kind == "eof" or self.is_op(";"):
            return
        if t.kind == "id" and (t.upper in STATEMENT_WORDS):
            return
        self.error()

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

    # ------------------------------------------------------------------ DDL

    def create(self) -> A.Stmt:
        line = self.advance().line
        if self.accept_kw("TABLE"):
            return self.create_table(line)
        unique = False
        clustered: Optional[bool] = None
        if self.accept_kw("UNIQUE"):
            unique = True
        if self.accept_kw("CLUSTERED"):
            clustered = True
        elif self.accept_kw("NONCLUSTERED"):
            clustered = False
        if self.accept_kw("INDEX"):
            name = self.ident()
            self.expect_kw("ON")
            table = self.obj_name()
            cols = self.index_columns()
            include: list[str] = []
            if self.is_kw("INCLUDE"):
                self.advance()
                include = self.column_alias_list() or []
            if self.is_kw("WHERE"):
                self.unsupported("filtered indexes")
            if self.is_kw("WITH"):
                self.unsupported("index options (WITH ...)")
            if self.is_kw("ON"):
                self.unsupported("filegroups / partition schemes")
            self.end_statement()
            return A.CreateIndex(line, name, table, cols, unique, bool(clustered), include)
        if unique or clustered is not None:
            self.error()
        self.unsupported(f"CREATE {self.tok.value}")

    def index_columns(self) -> list[tuple[str, bool]]:
        self.expect_op("(")
        cols: list[tuple[str, bool]] = []
        while True:
            c = self.ident()
            desc = False
            if self.accept_kw("DESC"):
                desc = True
            else:
                self.accept_kw("ASC")
            cols.append((c, desc))
            if not self.accept_op(","):
                break
        self.expect_op(")")
        return cols

    def data_type(self, context: str = "column") -> SqlT:
        """context: 'column'/'variable' (default length 1) or 'cast' (default length 30)."""
        t = self.tok
        if t.kind not in ("id", "qid"):
            self.error()
        u = t.upper
        if u == "NATIONAL":
            self.unsupported("the data type NATIONAL CHARACTER VARYING")
        self.advance()
        if self.is_op(".") and u in ("SYS", "DBO"):
            self.advance()
            t = self.tok
            u = t.upper
            self.advance()
        st = simple_type(u)
        if st is not None:
            if u in ("FLOAT", "DATETIME2") and self.is_op("("):
                self.advance()
                self.int_literal()
                self.expect_op(")")
            return st
        sized = sized_type_info(u)
        if sized is not None:
            kind, limit = sized
            length = 30 if context == "cast" else 1
            if self.accept_op("("):
                if self.is_kw("MAX"):
                    self.advance()
                    length = MAX
                else:
                    lt = self.tok
                    length = self.int_literal()
                    if length < 1 or length > limit:
                        if length > limit:
                            raise SQLError(
                                131,
                                f"The size ({length}) given to the type '{kind}' exceeds the maximum "
                                f"allowed for any data type ({limit}).",
                                15,
                                1,
                                lt.line,
                            )
                        raise SQLError(
                            1001,
                            f"Line {lt.line}: Length or precision specification {length} is invalid.",
                            15,
                            1,
                            lt.line,
                        )
                self.expect_op(")")
            return SqlT(kind, length)
        if u in KNOWN_UNSUPPORTED_TYPES:
            self.unsupported(f"the data type {t.value.lower()}", t)
        raise SQLError(
            2715, f"Column, parameter, or variable #1: Cannot find data type {t.value}.", 16, 1, t.line
        )

    def create_table(self, line: int) -> A.Stmt:
        name = self.obj_name()
        if name.name.startswith("#"):
            self.unsupported("temporary tables")
        self.expect_op("(")
        columns: list[A.ColumnDef] = []
        constraints: list[A.TableConstraint] = []
        while True:
            if self.is_kw("CONSTRAINT", "PRIMARY", "UNIQUE", "INDEX"):
                constraints.append(self.table_constraint())
            else:
                columns.append(self.column_def())
            if not self.accept_op(","):
                break
        self.expect_op(")")
        memory_optimized = False
        if self.is_kw("WITH"):
            self.advance()
            self.expect_op("(")
            while True:
                opt = self.tok
                self.advance()
                self.expect_op("=")
                val = self.tok
                self.advance()
                if opt.upper == "MEMORY_OPTIMIZED":
                    memory_optimized = val.upper == "ON"
                elif opt.upper != "DURABILITY":
                    self.unsupported(f"the table option {opt.value}", opt)
                if not self.accept_op(","):
                    break
            self.expect_op(")")
        if self.is_kw("ON", "TEXTIMAGE_ON"):
            self.unsupported("filegroups")
        self.end_statement()
        return A.CreateTable(line, name, columns, constraints, memory_optimized)

    def clustered_opt(self) -> Optional[bool]:
        if self.accept_kw("CLUSTERED"):
            return True
        if self.accept_kw("NONCLUSTERED"):
            if self.is_kw("HASH"):
                self.advance()
                if self.is_kw("WITH"):
                    self.advance()
                    self.expect_op("(")
                    while not self.is_op(")") and self.tok.kind != "eof":
                        self.advance()
                    self.expect_op(")")
            return False
        return None

    def table_constraint(self) -> A.TableConstraint:
        name = None
        if self.accept_kw("CONSTRAINT"):
            name = self.ident()
        if self.accept_kw("PRIMARY"):
            self.expect_kw("KEY")
            cl = self.clustered_opt()
            return A.TableConstraint("PRIMARY KEY", name, self.index_columns(), cl)
        if self.accept_kw("UNIQUE"):
            cl = self.clustered_opt()
            return A.TableConstraint("UNIQUE", name, self.index_columns(), cl)
        if self.accept_kw("INDEX") and name is None:
            iname = self.ident()
            unique = self.accept_kw("UNIQUE")
            cl = self.clustered_opt()
            return A.TableConstraint("UNIQUE INDEX" if unique else "INDEX", iname, self.index_columns(), cl)
        if self.is_kw("CHECK", "FOREIGN", "DEFAULT"):
            self.unsupported(f"{self.tok.upper} constraints")
        self.error()

    def column_def(self) -> A.ColumnDef:
        name_tok = self.tok
        name = self.ident()
        if self.is_kw("AS"):
            self.unsupported("computed columns")
        col = A.ColumnDef(name, self.data_type(), None)
        del name_tok
        while True:
            if self.accept_kw("NULL"):
                col.nullable = True
            elif self.is_kw("NOT") and self.peek().upper == "NULL":
                self.advance()
                self.advance()
                col.nullable = False
            elif self.accept_kw("COLLATE"):
                coll = self.tok
                self.advance()
                if coll.upper in BINARY_COLLATIONS:
                    col.collation_binary = True
                elif coll.upper in CI_COLLATIONS:
                    col.collation_binary = False
                else:
                    self.unsupported(f"the collation {coll.value}", coll)
            elif self.accept_kw("CONSTRAINT"):
                col.constraint_name = self.ident()
            elif self.accept_kw("PRIMARY"):
                self.expect_kw("KEY")
                col.primary_key = True
                col.clustered = self.clustered_opt()
            elif self.accept_kw("UNIQUE"):
                col.unique = True
                cl = self.clustered_opt()
                if cl is not None:
                    col.clustered = cl
            elif self.accept_kw("DEFAULT"):
                col.default = self.expr()
            elif self.is_kw("IDENTITY"):
                self.unsupported("IDENTITY columns")
            elif self.is_kw("CHECK", "REFERENCES", "FOREIGN", "ROWGUIDCOL", "SPARSE", "FILESTREAM"):
                self.unsupported(f"{self.tok.upper} in column definitions")
            else:
                break
        return col

    def drop(self) -> A.Stmt:
        line = self.advance().line
        if self.accept_kw("TABLE"):
            if_exists = False
            if self.is_kw("IF") and self.peek().upper == "EXISTS":
                self.advance()
                self.advance()
                if_exists = True
            names = [self.obj_name()]
            while self.accept_op(","):
                names.append(self.obj_name())
            self.end_statement()
            return A.DropTable(line, names, if_exists)
        if self.accept_kw("INDEX"):
            if_exists = False
            if self.is_kw("IF") and self.peek().upper == "EXISTS":
                self.advance()
                self.advance()
                if_exists = True
            items: list[tuple[A.ObjName, str]] = []
            while True:
                first = self.obj_name()
                if self.accept_kw("ON"):
                    items.append((self.obj_name(), first.name))
                else:
                    if first.schema is None:
                        raise SQLError(
                            159,
                            "Must specify the table name and index name for the DROP INDEX statement.",
                            15,
                            1,
                            line,
                        )
                    tbl = A.ObjName(first.schema, first.database, None, first.line)
                    items.append((tbl, first.name))
                if not self.accept_op(","):
                    break
            self.end_statement()
            return A.DropIndex(line, items, if_exists)
        self.unsupported(f"DROP {self.tok.value}")

    def truncate(self) -> A.Stmt:
        line = self.advance().line
        self.expect_kw("TABLE")
        name = self.obj_name()
        self.end_statement()
        return A.Truncate(line, name)

    # ------------------------------------------------------------------ control flow

    def body_statement(self) -> A.Stmt:
        while self.is_op(";"):
            self.advance()
        if self.tok.kind == "eof":
            self.error()
        return self.statement()

    def if_(self) -> A.Stmt:
        line = self.advance().line
        cond = self.condition()
        then = self.body_statement()
        while self.accept_op(";"):
            pass
        else_ = None
        if self.accept_kw("ELSE"):
            else_ = self.body_statement()
        return A.If(line, cond, then, else_)

    def while_(self) -> A.Stmt:
        line = self.advance().line
        cond = self.condition()
        self.loop_depth += 1
        body = self.body_statement()
        self.loop_depth -= 1
        return A.While(line, cond, body)

    def break_(self) -> A.Stmt:
        t = self.advance()
        if not self.loop_depth:
            raise SQLError(
                135, "Cannot use a BREAK statement outside the scope of a WHILE statement.", 15, 1, t.line
            )
        return A.Break(t.line)

    def continue_(self) -> A.Stmt:
        t = self.advance()
        if not self.loop_depth:
            raise SQLError(
                136, "Cannot use a CONTINUE statement outside the scope of a WHILE statement.", 15, 1, t.line
            )
        return A.Continue(t.line)

    def return_(self) -> A.Stmt:
        t = self.advance()
        if not (
            self.tok.kind == "eof"
            or self.is_op(";")
            or (self.tok.kind == "id" and self.tok.upper in STATEMENT_WORDS)
        ):
            self.unsupported("RETURN with a value outside a procedure")
        return A.Return(t.line)

    def begin(self) -> A.Stmt:
        t = self.advance()
        if self.is_kw("TRAN", "TRANSACTION"):
            self.advance()
            name, name_expr = self.tran_name()
            if self.is_kw("WITH") and self.peek().upper == "MARK":
                self.unsupported("WITH MARK")
            self.end_statement()
            return A.TranStmt(t.line, "BEGIN", name, name_expr)
        if self.is_kw("DISTRIBUTED"):
            self.unsupported("distributed transactions")
        if self.is_kw("TRY", "CATCH"):
            self.unsupported("TRY/CATCH blocks")
        if self.is_kw("CONVERSATION", "DIALOG"):
            self.unsupported("Service Broker")
        body: list[A.Stmt] = []
        while True:
            while self.accept_op(";"):
                pass
            if self.is_kw("END"):
                break
            if self.tok.kind == "eof":
                self.error()
            body.append(self.statement())
        end = self.advance()
        if not body:
            self.error(end)
        return A.Block(t.line, body)

    def tran_name(self) -> tuple[Optional[str], Optional[A.Expr]]:
        t = self.tok
        if t.kind == "qid" or (t.kind == "id" and t.upper not in RESERVED and t.upper not in STATEMENT_WORDS):
            self.advance()
            if len(t.value) > 32:
                raise SQLError(
                    103,
                    f"The identifier that starts with '{t.value[:32]}' is too long. Maximum length is 32.",
                    15,
                    1,
                    t.line,
                )
            return t.value, None
        if t.kind == "var":
            return None, self.primary()
        return None, None

    def commit_rollback(self) -> A.Stmt:
        t = self.advance()
        kind = t.upper
        self.accept_kw("TRAN", "TRANSACTION", "WORK")
        name, name_expr = self.tran_name()
        if self.is_kw("WITH"):
            self.unsupported("COMMIT ... WITH (DELAYED_DURABILITY)")
        self.end_statement()
        return A.TranStmt(t.line, kind, name, name_expr)

    def save(self) -> A.Stmt:
        t = self.advance()
        if not self.accept_kw("TRAN", "TRANSACTION"):
            self.error()
        name, name_expr = self.tran_name()
        if name is None and name_expr is None:
            self.error()
        self.end_statement()
        return A.TranStmt(t.line, "SAVE", name, name_expr)

    # ------------------------------------------------------------------ variables / SET / EXEC

    def variable(self, t: Token) -> A.Var:
        v = self.vars.get(t.upper)
        if v is None:
            raise SQLError(137, f'Must declare the scalar variable "{t.value}".', 15, 1, t.line)
        return v

    def declare(self) -> A.Stmt:
        line = self.advance().line
        items: list[A.DeclareItem] = []
        while True:
            t = self.tok
            if t.kind != "var":
                self.error()
            self.advance()
            if t.upper in self.vars:
                raise SQLError(
                    134,
                    f"The variable name '{t.value}' has already been declared. Variable names must "
                    "be unique within a query batch or stored procedure.",
                    15,
                    1,
                    t.line,
                )
            self.accept_kw("AS")
            if self.is_kw("TABLE", "CURSOR"):
                self.unsupported(f"{self.tok.upper} variables")
            typ = self.data_type("variable")
            init = None
            if self.accept_op("="):
                init = self.expr()
            var = A.Var(t.value, len(self.var_types))
            self.var_types.append(typ)
            self.vars[t.upper] = var
            items.append(A.DeclareItem(var, typ, init))
            if not self.accept_op(","):
                break
        self.end_statement()
        return A.Declare(line, items)

    def set_(self) -> A.Stmt:
        line = self.advance().line
        t = self.tok
        if t.kind == "var":
            var = self.variable(t)
            self.advance()
            op = self.assignment_op()
            e = self.expr()
            self.end_statement()
            return A.SetVar(line, var, op, e)
        if t.kind != "id":
            self.error()
        u = t.upper
        if u == "TRANSACTION":
            self.advance()
            self.expect_kw("ISOLATION")
            self.expect_kw("LEVEL")
            if self.accept_kw("READ"):
                if self.accept_kw("COMMITTED"):
                    level = "READ COMMITTED"
                elif self.accept_kw("UNCOMMITTED"):
                    level = "READ UNCOMMITTED"
                else:
                    self.error()
            elif self.accept_kw("REPEATABLE"):
                self.expect_kw("READ")
                level = "REPEATABLE READ"
            elif self.accept_kw("SERIALIZABLE"):
                level = "SERIALIZABLE"
            elif self.is_kw("SNAPSHOT"):
                self.unsupported("SNAPSHOT isolation")
            else:
                self.error()
            self.end_statement()
            return A.SetOption(line, ["ISOLATION"], level)
        if u in ("LOCK_TIMEOUT", "TEXTSIZE", "ROWCOUNT", "DEADLOCK_PRIORITY", "DATEFIRST"):
            self.advance()
            if u == "DEADLOCK_PRIORITY" and self.is_kw("LOW", "NORMAL", "HIGH"):
                val: object = self.advance().upper
            else:
                val = self.expr()
            self.end_statement()
            return A.SetOption(line, [u], val)
        if u in ("DATEFORMAT", "LANGUAGE"):
            self.advance()
            vt = self.tok
            if vt.kind in ("id", "qid"):
                self.advance()
                sval = vt.value
            elif vt.kind == "lit" and vt.lit_kind in (LIT_STR, LIT_NSTR):
                self.advance()
                lv = self.literal_value(vt)
                assert isinstance(lv, str)
                sval = lv
            else:
                self.error()
            if u == "DATEFORMAT" and sval.lower() != "mdy":
                self.unsupported(f"SET DATEFORMAT {sval} (only mdy)", vt)
            if u == "LANGUAGE" and sval.lower() not in ("us_english", "english"):
                self.unsupported(f"SET LANGUAGE {sval} (only us_english)", vt)
            self.end_statement()
            return A.SetOption(line, [u], sval)
        if u == "STATISTICS":
            self.unsupported("SET STATISTICS")
        names: list[str] = []
        while True:
            ot = self.tok
            if ot.kind != "id":
                self.error()
            if ot.upper not in ON_OFF_OPTIONS:
                raise SQLError(195, f"'{ot.value}' is not a recognized SET option.", 15, 1, ot.line)
            self.advance()
            names.append(ot.upper)
            if not self.accept_op(","):
                break
        if self.accept_kw("ON"):
            value = "ON"
        elif self.accept_kw("OFF"):
            value = "OFF"
        else:
            self.error()
        for n in names:
            if value == "OFF" and n in ("ANSI_NULLS", "CONCAT_NULL_YIELDS_NULL", "QUOTED_IDENTIFIER"):
                self.unsupported(f"SET {n} OFF", t)
            if value == "ON" and n in (
                "FMTONLY",
                "NOEXEC",
                "PARSEONLY",
                "SHOWPLAN_ALL",
                "SHOWPLAN_TEXT",
                "SHOWPLAN_XML",
                "FORCEPLAN",
                "ANSI_DEFAULTS",
                "NO_BROWSETABLE",
            ):
                self.unsupported(f"SET {n} ON", t)
            if len(names) > 1 and n in ("SHOWPLAN_ALL", "SHOWPLAN_TEXT", "SHOWPLAN_XML"):
                self.error()
        self.end_statement()
        return A.SetOption(line, names, value)

    def exec_(self) -> A.Stmt:
        line = self.advance().line
        ret: Optional[A.Var] = None
        t = self.tok
        if self.is_op("("):
            self.unsupported("dynamic SQL (EXEC (...))")
        if t.kind == "var":
            if self.peek().kind == "op" and self.peek().value == "=":
                ret = self.variable(t)
                self.advance()
                self.advance()
            else:
                self.unsupported("EXEC @procedure_name_variable")
        return self.parse_exec_body(line, ret)

    def parse_exec_body(self, line: int, ret: Optional[A.Var]) -> A.Stmt:
        proc = self.obj_name()
        args: list[A.ExecArg] = []
        if not (
            self.tok.kind == "eof"
            or self.is_op(";")
            or (self.tok.kind == "id" and self.tok.upper in STATEMENT_WORDS)
        ):
            while True:
                t = self.tok
                name = None
                if t.kind == "var" and self.peek().kind == "op" and self.peek().value == "=":
                    name = t.upper
                    self.advance()
                    self.advance()
                if self.is_kw("DEFAULT"):
                    self.advance()
                    e: A.Expr = A.Const(_DEFAULT, T_NULL)
                else:
                    e = self.expr()
                out = False
                if self.accept_kw("OUTPUT", "OUT"):
                    out = True
                args.append(A.ExecArg(name, e, out))
                if not self.accept_op(","):
                    break
        if self.is_kw("WITH"):
            self.unsupported("EXEC ... WITH")
        self.end_statement()
        return A.Exec(line, proc, args, ret)

    def use(self) -> A.Stmt:
        line = self.advance().line
        name = self.ident()
        self.end_statement()
        return A.Use(line, name)

    def print_(self) -> A.Stmt:
        line = self.advance().line
        e = self.expr()
        self.end_statement()
        return A.Print(line, e)

    def raiserror(self) -> A.Stmt:
        line = self.advance().line
        self.expect_op("(")
        msg = self.expr()
        self.expect_op(",")
        sev = self.expr()
        self.expect_op(",")
        state = self.expr()
        args: list[A.Expr] = []
        while self.accept_op(","):
            args.append(self.expr())
        self.expect_op(")")
        if self.accept_kw("WITH"):
            while True:
                if not self.is_kw("NOWAIT", "LOG", "SETERROR"):
                    self.error()
                self.advance()
                if not self.accept_op(","):
                    break
        self.end_statement()
        return A.Raiserror(line, msg, sev, state, args)

    def throw(self) -> A.Stmt:
        line = self.advance().line
        if self.tok.kind == "eof" or self.is_op(";"):
            raise SQLError(
                10704,
                "To rethrow an error, a THROW statement must be used inside a CATCH block. Insert "
                "the THROW statement inside a CATCH block, or add error parameters to the THROW "
                "statement.",
                15,
                1,
                line,
            )
        num = self.expr()
        self.expect_op(",")
        msg = self.expr()
        self.expect_op(",")
        state = self.expr()
        self.end_statement()
        return A.Throw(line, num, msg, state)

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


class _DefaultMarker:
    """The DEFAULT keyword in VALUES / SET / EXEC."""

    def __repr__(self) -> str:
        return "DEFAULT"


_DEFAULT = _DefaultMarker()
DEFAULT = _DEFAULT


def parse(key: str, values: list[LiteralValue]) -> tuple[A.Batch, list[tuple[int, LiteralValue]]]:
    """Parse a batch's shape key; returns the AST and the literal slots whose values the AST depends on."""
    toks = tokenize(key)
    for t in toks:
        if t.kind == "lit":
            v = values[t.slot]
            t.raw = v if isinstance(v, str) else ("0x" + v.hex() if isinstance(v, bytes) else str(v))
    p = Parser(toks, values)
    batch = p.parse_batch()
    return batch, p.structural


LIT_TYPE = _LIT_TYPES
_ = (LIT_HEX, LIT_NSTR, T_FLOAT)
