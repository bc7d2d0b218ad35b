"""The parser's ground floor: T-SQL word lists, the token cursor, and the error helpers every layer uses.

The parser is one class built in layers, one file each (parse_base -> parse_expressions ->
parse_queries -> parse_ddl -> parser); this file holds what all of them share: the reserved words,
statement words, function table and the 102/156 syntax errors SQL Server gives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn, Optional

from ..results import SQLError
from . import ast as A
from .lexer import LIT_BIGINT, LIT_DEC, LIT_FLOAT, LIT_INT, LiteralValue, Token
from .types import T_BIGINT, T_FLOAT, T_INT, SqlT

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


class ParserBase:
    """Token state and helpers; the grammar lives in the subclasses (see the module docstring)."""

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

    if TYPE_CHECKING:
        # Defined by later layers; declared here so each layer type-checks on its own.
        def end_statement(self) -> None:
            raise NotImplementedError

        def select(self, subquery: bool = False) -> A.Select:
            raise NotImplementedError

        def data_type(self, context: str = "column") -> SqlT:
            raise NotImplementedError

        def variable(self, t: Token) -> A.Var:
            raise NotImplementedError


class _DefaultMarker:
    """The DEFAULT keyword in VALUES / SET / EXEC."""

    def __repr__(self) -> str:
        return "DEFAULT"


_DEFAULT = _DefaultMarker()
DEFAULT = _DEFAULT
