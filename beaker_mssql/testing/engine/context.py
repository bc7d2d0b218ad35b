"""What every statement runs with: ``Ctx`` (one batch's literals, variables and clock reading) and
the small helpers the query and DML layers share (name resolution, wire columns, typed assignment)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Optional

from ..results import MAX, Column, SQLError
from . import ast as A
from .compiled import CE, Fn
from .expressions import Binder, Scope
from .parse_base import DEFAULT
from .storage import ColumnInfo, Database, Table
from .types import STRING_KINDS, SqlT, check_implicit, convert, round_datetime

if TYPE_CHECKING:
    from . import EngineSession


Row = list[Any]


class Ctx:
    """Per-batch execution state: literal values, variables, and the statement's clock reading."""

    __slots__ = ("batch", "engine", "params", "session", "t", "vars")

    def __init__(self, session: EngineSession, params: list[Any], batch: A.Batch) -> None:
        self.session = session
        self.engine = session.engine
        self.params = params
        self.vars: list[Any] = [None] * batch.nvars
        self.batch = batch
        self.t: Optional[datetime] = None

    def _clock(self) -> datetime:
        if self.t is None:
            self.t = self.engine.clock.utcnow()
        return self.t

    def now_utc(self) -> datetime:
        return round_datetime(self._clock())

    def now_utc2(self) -> datetime:
        return self._clock()

    def now_local(self) -> datetime:
        return round_datetime(self._clock() + self.engine.clock.utc_offset)

    def now_local2(self) -> datetime:
        return self._clock() + self.engine.clock.utc_offset


# ----------------------------------------------------------------------------- helpers


def wire_column(name: str, t: SqlT, nullable: bool = True) -> Column:
    st, length = t.wire()
    return Column(name, st, length, nullable)


def output_fn(ce: CE) -> Fn:
    """The closure producing a result column: datetime2 values are sent as datetime (rounded to 1/300 s)."""
    if ce.type.kind != "datetime2":
        return ce.fn
    f = ce.fn

    def rounded(c: Ctx, r: Any) -> Any:
        v = f(c, r)
        if v is None:
            return None
        try:
            return round_datetime(v)
        except OverflowError:
            raise SQLError(
                242,
                "The conversion of a datetime2 data type to a datetime data type resulted in an "
                "out-of-range value.",
                16,
            ) from None

    return rounded


def resolve_db(session: EngineSession, name: A.ObjName) -> Database:
    eng = session.engine
    if name.database is not None:
        db = eng.database_named(name.database)
        if db is None:
            raise SQLError(208, f"Invalid object name '{name.display()}'.", 16, 1)
        return db
    db = eng.database_named(session.database)
    assert db is not None
    return db


def find_table(session: EngineSession, name: A.ObjName) -> Optional[Table]:
    db = resolve_db(session, name)
    return db.get(name.schema or "dbo", name.name)


def require_table(session: EngineSession, name: A.ObjName) -> Table:
    t = find_table(session, name)
    if t is None:
        db = name.database or session.database
        raise SQLError(208, f"Invalid object name '{name.display()}'.", 16, 1,
                       context={"database": db, "schema": name.schema or "dbo", "name": name.name})
    return t


def lock_key(t: Table, row: Row, rowid: int) -> Any:
    return t.pk_lock_key(row) if t.pk is not None else rowid


def not_null_error(t: Table, col: ColumnInfo, verb: str) -> SQLError:
    return SQLError(
        515,
        f"Cannot insert the value NULL into column '{col.name}', table '{t.full}'; column does not "
        f"allow nulls. {verb} fails.",
        16,
        2,
    )


def make_assign(t: Table, col: ColumnInfo, ce: CE, verb: str) -> Fn:
    """Value of ``ce`` converted for storage in ``col``: 257/245/241, 2628 truncation, 515 NULL."""
    src = ce.type
    f = ce.fn
    dst = col.type
    if src.kind != "null":
        check_implicit(src, dst)
    need_conv = (
        src.kind != "null"
        and src.kind != dst.kind
        and not (src.kind in STRING_KINDS and dst.kind in STRING_KINDS)
    )
    conv_t = SqlT(dst.kind, MAX) if dst.kind in ("nvarchar", "varchar", "varbinary") else dst
    limit = dst.length if dst.kind in ("nvarchar", "varchar", "varbinary") and dst.length != MAX else 0
    nullable = col.nullable
    is_int = dst.kind in ("tinyint", "smallint", "int", "bigint")

    def assign(c: Ctx, r: Any) -> Any:
        v = f(c, r)
        if v is None or v is DEFAULT:
            if v is DEFAULT:
                v = default_value(c, t, col)
                if v is not None:
                    return v
            if not nullable:
                raise not_null_error(t, col, verb)
            return None
        if need_conv:
            v = convert(v, src, conv_t)
        elif is_int and src.kind != dst.kind:
            v = convert(v, src, dst)
        if limit and _length(v) > limit:
            # Only trailing spaces beyond the limit: SQL Server trims them silently.
            if isinstance(v, str) and v[limit:].strip(" ") == "" and _length(v[:limit]) <= limit:
                v = v[:limit]
            else:
                shown = v[:limit] if isinstance(v, str) else "0x" + v[:limit].hex().upper()
                raise SQLError(
                    2628,
                    f"String or binary data would be truncated in table '{t.full}', column "
                    f"'{col.name}'. Truncated value: '{shown}'.",
                    16,
                    1,
                    context={"length": limit},
                )
        return v

    return assign


def _length(value: Any) -> int:
    """Length as SQL Server counts it for nvarchar(n)/varbinary(n): UTF-16 code units or bytes.

    A character outside the Basic Multilingual Plane (an emoji) is two units, so 200 emoji do not fit
    nvarchar(255) on SQL Server (2628), although they are 200 Python characters.
    """
    if isinstance(value, str) and not value.isascii():
        return len(value.encode("utf-16-le")) // 2
    return len(value)


def default_value(c: Ctx, t: Table, col: ColumnInfo) -> Any:
    if col.default is None:
        return None
    binder = Binder(Scope([]), [], lambda s: (None, []))
    ce = binder.compile(col.default)
    src = ce.type
    v = ce.fn(c, None)
    if v is None:
        return None
    if src.kind != col.type.kind and not (src.kind in STRING_KINDS and col.type.kind in STRING_KINDS):
        v = convert(v, src, col.type)
    return v
