"""The small AST the parser produces. Literals are *slots* so a parsed batch can be reused for any
request with the same shape; the executor binds the literal values per request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Union

from .types import SqlT

# ----------------------------------------------------------------------------- expressions


@dataclass(eq=False)
class Expr:
    pass


@dataclass(eq=False)
class Lit(Expr):
    slot: int
    kind: str  # lexer.LIT_*


@dataclass(eq=False)
class Const(Expr):
    value: Any
    type: SqlT


@dataclass(eq=False)
class Col(Expr):
    parts: list[str]  # [col] / [alias, col] / [schema, table, col]
    line: int = 1


@dataclass(eq=False)
class Var(Expr):
    name: str
    index: int


@dataclass(eq=False)
class GVar(Expr):
    name: str  # upper-case, e.g. '@@ROWCOUNT'


@dataclass(eq=False)
class Unary(Expr):
    op: str
    operand: Expr


@dataclass(eq=False)
class Binary(Expr):
    op: str
    left: Expr
    right: Expr


@dataclass(eq=False)
class Compare(Expr):
    op: str  # = <> < <= > >=
    left: Expr
    right: Expr


@dataclass(eq=False)
class And(Expr):
    items: list[Expr]


@dataclass(eq=False)
class Or(Expr):
    items: list[Expr]


@dataclass(eq=False)
class Not(Expr):
    operand: Expr


@dataclass(eq=False)
class IsNull(Expr):
    operand: Expr
    negated: bool


@dataclass(eq=False)
class InList(Expr):
    operand: Expr
    items: list[Expr]
    negated: bool


@dataclass(eq=False)
class InSelect(Expr):
    operand: Expr
    select: Select
    negated: bool


@dataclass(eq=False)
class Like(Expr):
    operand: Expr
    pattern: Expr
    escape: Optional[Expr]
    negated: bool


@dataclass(eq=False)
class Between(Expr):
    operand: Expr
    low: Expr
    high: Expr
    negated: bool


@dataclass(eq=False)
class Exists(Expr):
    select: Select


@dataclass(eq=False)
class Subquery(Expr):
    select: Select


@dataclass(eq=False)
class DatePart(Expr):
    name: str  # canonical: 'second', 'minute', ...


@dataclass(eq=False)
class Func(Expr):
    name: str  # upper-case
    args: list[Expr]
    star: bool = False
    distinct: bool = False
    line: int = 1


@dataclass(eq=False)
class Cast(Expr):
    operand: Expr
    type: SqlT
    style: Optional[Expr] = None
    try_: bool = False


@dataclass(eq=False)
class Collate(Expr):
    operand: Expr
    collation: str  # upper-case name
    binary: bool


@dataclass(eq=False)
class Case(Expr):
    operand: Optional[Expr]
    whens: list[tuple[Expr, Expr]]
    else_: Optional[Expr]


# ----------------------------------------------------------------------------- statements


@dataclass(eq=False)
class ObjName:
    name: str
    schema: Optional[str] = None
    database: Optional[str] = None
    line: int = 1

    def display(self) -> str:
        """As SQL Server prints it in 208 messages: the name as written, without brackets."""
        parts = [p for p in (self.database, self.schema, self.name) if p is not None]
        if self.database is not None and self.schema is None:
            return f"{self.database}..{self.name}"
        return ".".join(parts)


@dataclass(eq=False)
class Stmt:
    line: int

    # (start, end) offsets in the shape key and the first literal slot: lets the executor rebuild the
    # statement's text for EngineHooks.before_statement without keeping the tokens.
    span: tuple[int, int, int] = field(default=(0, 0, 0), init=False, repr=False)
    # the span's text split at the literal markers (computed on first use; a cached batch reuses it)
    text_pieces: Optional[list[str]] = field(default=None, init=False, repr=False)


@dataclass(eq=False)
class SelectItem:
    expr: Optional[Expr]  # None for '*'
    alias: Optional[str] = None
    star_qualifier: Optional[str] = None
    assign: Optional[Var] = None  # SELECT @v = expr
    assign_op: str = "="


@dataclass(eq=False)
class TableRef:
    name: ObjName
    alias: Optional[str]
    hints: list[str] = field(default_factory=list)
    derived: Optional[Select] = None  # (SELECT ...) AS x
    values: Optional[list[list[Expr]]] = None  # (VALUES ...) AS x (cols)
    column_aliases: Optional[list[str]] = None


@dataclass(eq=False)
class Join:
    kind: str  # INNER, LEFT, CROSS
    table: TableRef
    on: Optional[Expr]


@dataclass(eq=False)
class OrderItem:
    expr: Expr
    desc: bool


@dataclass(eq=False)
class OutputClause:
    items: list[SelectItem]


@dataclass(eq=False)
class Select(Stmt):
    items: list[SelectItem]
    top: Optional[Expr] = None
    top_percent: bool = False
    distinct: bool = False
    from_: Optional[TableRef] = None
    joins: list[Join] = field(default_factory=list)
    where: Optional[Expr] = None
    group_by: list[Expr] = field(default_factory=list)
    having: Optional[Expr] = None
    order_by: list[OrderItem] = field(default_factory=list)
    plan: Any = None


@dataclass(eq=False)
class Insert(Stmt):
    table: TableRef
    columns: Optional[list[str]]
    rows: Optional[list[list[Expr]]] = None
    select: Optional[Select] = None
    default_values: bool = False
    output: Optional[OutputClause] = None
    top: Optional[Expr] = None
    plan: Any = None


@dataclass(eq=False)
class Update(Stmt):
    table: TableRef
    sets: list[tuple[Union[Col, Var], str, Expr]]
    where: Optional[Expr] = None
    top: Optional[Expr] = None
    output: Optional[OutputClause] = None
    plan: Any = None


@dataclass(eq=False)
class Delete(Stmt):
    table: TableRef
    where: Optional[Expr] = None
    top: Optional[Expr] = None
    output: Optional[OutputClause] = None
    plan: Any = None


@dataclass(eq=False)
class MergeWhen:
    matched: bool
    by_source: bool = False
    condition: Optional[Expr] = None
    action: str = "UPDATE"  # UPDATE, DELETE, INSERT
    sets: list[tuple[Col, str, Expr]] = field(default_factory=list)
    columns: Optional[list[str]] = None
    values: list[Expr] = field(default_factory=list)
    default_values: bool = False


@dataclass(eq=False)
class Merge(Stmt):
    target: TableRef
    source: TableRef
    on: Expr
    whens: list[MergeWhen]
    output: Optional[OutputClause] = None
    top: Optional[Expr] = None
    plan: Any = None


@dataclass(eq=False)
class ColumnDef:
    name: str
    type: SqlT
    nullable: Optional[bool]  # None: not specified (ANSI_NULL_DFLT_ON -> NULL)
    primary_key: bool = False
    unique: bool = False
    clustered: Optional[bool] = None
    constraint_name: Optional[str] = None
    default: Optional[Expr] = None
    identity: Optional[tuple[int, int]] = None
    collation_binary: Optional[bool] = None


@dataclass(eq=False)
class TableConstraint:
    kind: str  # PRIMARY KEY / UNIQUE
    name: Optional[str]
    columns: list[tuple[str, bool]]
    clustered: Optional[bool] = None


@dataclass(eq=False)
class CreateTable(Stmt):
    name: ObjName
    columns: list[ColumnDef]
    constraints: list[TableConstraint]
    memory_optimized: bool = False


@dataclass(eq=False)
class DropTable(Stmt):
    names: list[ObjName]
    if_exists: bool = False


@dataclass(eq=False)
class CreateIndex(Stmt):
    name: str
    table: ObjName
    columns: list[tuple[str, bool]]
    unique: bool = False
    clustered: bool = False
    include: list[str] = field(default_factory=list)


@dataclass(eq=False)
class DropIndex(Stmt):
    items: list[tuple[ObjName, str]]
    if_exists: bool = False


@dataclass(eq=False)
class Truncate(Stmt):
    name: ObjName


@dataclass(eq=False)
class If(Stmt):
    cond: Expr
    then: Stmt
    else_: Optional[Stmt] = None


@dataclass(eq=False)
class While(Stmt):
    cond: Expr
    body: Stmt


@dataclass(eq=False)
class Break(Stmt):
    pass


@dataclass(eq=False)
class Continue(Stmt):
    pass


@dataclass(eq=False)
class Block(Stmt):
    body: list[Stmt]


@dataclass(eq=False)
class DeclareItem:
    var: Var
    type: SqlT
    init: Optional[Expr]


@dataclass(eq=False)
class Declare(Stmt):
    items: list[DeclareItem]


@dataclass(eq=False)
class SetVar(Stmt):
    var: Var
    op: str
    expr: Expr


@dataclass(eq=False)
class SetOption(Stmt):
    names: list[str]  # upper-case option names
    value: Any  # 'ON'/'OFF'/Expr/str


@dataclass(eq=False)
class ExecArg:
    name: Optional[str]  # '@Resource' (upper-cased) or None for positional
    expr: Expr
    output: bool = False


@dataclass(eq=False)
class Exec(Stmt):
    proc: ObjName
    args: list[ExecArg]
    ret: Optional[Var] = None


@dataclass(eq=False)
class Use(Stmt):
    database: str


@dataclass(eq=False)
class TranStmt(Stmt):
    kind: str  # BEGIN, COMMIT, ROLLBACK, SAVE
    name: Optional[str] = None
    name_expr: Optional[Expr] = None


@dataclass(eq=False)
class Print(Stmt):
    expr: Expr


@dataclass(eq=False)
class Throw(Stmt):
    number: Optional[Expr] = None
    message: Optional[Expr] = None
    state: Optional[Expr] = None


@dataclass(eq=False)
class Raiserror(Stmt):
    message: Expr
    severity: Expr
    state: Expr
    args: list[Expr] = field(default_factory=list)


@dataclass(eq=False)
class Return(Stmt):
    pass


@dataclass(eq=False)
class Batch:
    statements: list[Stmt]
    nvars: int
    var_types: list[SqlT]

    # (schema version, database) at which EngineSession._prebind last passed for this batch: its outcome
    # depends only on those (like the plan caches it fills), so a cached batch skips the walk.
    prebound: Any = field(default=None, init=False, repr=False)
