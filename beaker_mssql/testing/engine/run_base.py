"""What one batch run is, shared by the statement layers (run_statements, run_procedures, run_ddl):
its state (``RunBase``: session, context, events, cancel flag), the exceptions that cut it short
(cancel, batch abort, BREAK / CONTINUE / RETURN) and the error numbers that abort a batch or roll
back its transaction."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Optional, Protocol

from ..results import Event, SQLError
from . import ast as A
from .context import Ctx
from .lexer import MARKER_RE

if TYPE_CHECKING:
    from .session import EngineSession


class Cancelled(Exception):
    """The client cancelled the request (attention) while the batch was running or waiting."""


class CancelFlag(Protocol):
    """The ``cancel`` argument of EngineSession.execute: only is_set() is used (a threading.Event fits;
    the TDS server passes a flag that also peeks at the client's socket)."""

    def is_set(self) -> bool: ...


class _BatchAbort(Exception):
    pass


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _Return(Exception):
    pass


# Errors that abort the batch even without XACT_ABORT (the open transaction stays open).
BATCH_ABORT = frozenset(
    {
        208,
        207,
        209,
        4104,
        245,
        241,
        242,
        8114,
        257,
        529,
        8115,
        8134,
        517,
        535,
        8116,
        8117,
        402,
        1013,
        213,
        8120,
        512,
        116,
        156,
        102,
        137,
        4145,
    }
)
# Errors that also roll back the transaction.
ROLLBACK_ABORT = frozenset({1205})


class RunBase:
    """The state of one batch execution; the statements it runs are in the subclasses."""

    def __init__(
        self,
        session: EngineSession,
        ctx: Ctx,
        key: str,
        raws: list[str],
        events: list[Event],
        cancel: Optional[CancelFlag],
    ) -> None:
        self.s = session
        self.ctx = ctx
        self.key = key
        self.raws = raws
        self.events = events
        self.cancel = cancel

    def stmt_text(self, st: A.Stmt) -> str:
        """The statement's source text (for EngineHooks): its span of the shape key, literals put back.

        Runs for every statement when hooks are set (the server's are); the split of the span at the
        markers depends only on the shape key, so it is kept on the (cached) statement.
        """
        pieces = st.text_pieces
        if pieces is None:
            start, end, _ = st.span
            pieces = st.text_pieces = MARKER_RE.split(self.key[start:end])
        if len(pieces) == 1:
            return pieces[0]
        first = st.span[2]
        raws = self.raws
        n = len(raws)
        out = [pieces[0]]
        for i in range(1, len(pieces)):
            slot = first + i - 1
            out.append(raws[slot] if slot < n else "")
            out.append(pieces[i])
        return "".join(out)

    if TYPE_CHECKING:
        # Defined by run_statements._Run; declared here so each layer type-checks on its own.
        def scalar(self, st: Any, e: A.Expr) -> Any:
            raise NotImplementedError


def _int_param(v: Any) -> int:
    """An int parameter/option value given as any type (SQL Server: 8114 when it does not convert)."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v)
    if isinstance(v, str) and re.fullmatch(r"\s*[+-]?\d+\s*", v):
        return int(v)
    kind = "nvarchar" if isinstance(v, str) else "varbinary" if isinstance(v, bytes) else "datetime"
    raise SQLError(8114, f"Error converting data type {kind} to int.", 16)
