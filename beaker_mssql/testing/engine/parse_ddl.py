"""DDL: CREATE TABLE / INDEX, column definitions and data types, constraints, DROP, TRUNCATE."""

from __future__ import annotations

from typing import Optional

from ..results import MAX, SQLError
from . import ast as A
from .parse_queries import QueryParser
from .types import (
    BINARY_COLLATIONS,
    CI_COLLATIONS,
    KNOWN_UNSUPPORTED_TYPES,
    SqlT,
    simple_type,
    sized_type_info,
)


class DdlParser(QueryParser):
    """CREATE / DROP / TRUNCATE and the data type grammar (also used by DECLARE and CAST)."""

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
