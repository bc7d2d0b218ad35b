"""Compiled expressions (``CE``): what the expression binder, the built-in functions and the executor
pass around. A module of its own so that ``functions`` (which builds CEs) and ``expressions`` (which
calls ``functions``) do not import each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from .storage import ColumnInfo
from .types import SqlT

if TYPE_CHECKING:
    from .context import Ctx

Fn = Callable[["Ctx", Any], Any]


class CE:
    """A compiled expression: closure, static type, collation info, and whether it reads the row."""

    __slots__ = ("binary", "col", "colbin", "deps", "fn", "type")

    def __init__(
        self,
        fn: Fn,
        type_: SqlT,
        deps: bool = False,
        binary: Optional[bool] = None,
        colbin: bool = False,
        col: Optional[tuple[int, ColumnInfo]] = None,
    ) -> None:
        self.fn = fn
        self.type = type_
        self.deps = deps  # reads columns of the current row
        self.binary = binary  # explicit COLLATE: True binary/CS, False CI, None none
        self.colbin = colbin  # implicit collation of a binary column
        self.col = col  # (row offset, column) for a bare column reference
