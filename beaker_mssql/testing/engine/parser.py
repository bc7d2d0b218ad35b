"""Recursive-descent parser for the supported T-SQL subset.

Strict on purpose: anything SQL Server would reject is rejected here with SQL Server's error number
(102/156 syntax, 137 undeclared variable, 195 unknown function/option, 174 argument count, ...);
anything valid but outside the subset is rejected with 102 and a note saying the stand-in does not
support it. The whole batch is parsed before anything runs, as SQL Server compiles a batch first.

Layers, one file each: parse_base (words, token cursor, errors) -> parse_expressions -> parse_queries
(SELECT and DML) -> parse_ddl -> this file (batches, control flow, variables, SET, EXEC, transactions).
"""

from __future__ import annotations

from typing import Callable, Optional

from ..results import SQLError
from . import ast as A
from .lexer import LIT_HEX, LIT_NSTR, LIT_STR, LiteralValue, Token, tokenize
from .parse_base import _DEFAULT, _LIT_TYPES, ON_OFF_OPTIONS, RESERVED, STATEMENT_WORDS
from .parse_ddl import DdlParser
from .types import T_FLOAT, T_NULL


class Parser(DdlParser):
    """The whole parser: batch and statement dispatch, control flow, variables / SET / EXEC."""

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
