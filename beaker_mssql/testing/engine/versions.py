"""Row versions for READ_COMMITTED_SNAPSHOT readers (profiles ``azure`` and ``babelfish``).

The engine changes rows in place and keeps, per session, an undo log of the before-images of its
uncommitted changes. That log *is* the version store: the committed version of a row another session
changed is the before-image of that session's first change to it, and a row another session inserted
has no committed version at all. A snapshot reader therefore reads the current rows with those rows
swapped for their before-images, and takes no locks.

Statement-level consistency comes for free: each statement runs under the engine mutex, and a
statement that waits for a lock undoes its changes before it lets go of the mutex, so a reader never
sees half a statement.

Sources: READ COMMITTED with READ_COMMITTED_SNAPSHOT ON "uses row versioning to present each statement
with a transactionally consistent snapshot of the data as it existed at the start of the statement"
(https://learn.microsoft.com/en-us/sql/t-sql/statements/set-transaction-isolation-level-transact-sql);
PostgreSQL's READ COMMITTED gives the same to Babelfish readers
(https://www.postgresql.org/docs/16/transaction-iso.html#XACT-READ-COMMITTED).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Optional

from .storage import Table

if TYPE_CHECKING:
    from . import Engine, EngineSession

Row = list[Any]

#: Hints that make a READ COMMITTED reader lock even when READ_COMMITTED_SNAPSHOT is on (or read dirty
#: rows): https://learn.microsoft.com/en-us/sql/t-sql/queries/hints-transact-sql-table
LOCKING_READ_HINTS = frozenset(
    {
        "READCOMMITTEDLOCK",
        "HOLDLOCK",
        "SERIALIZABLE",
        "REPEATABLEREAD",
        "UPDLOCK",
        "XLOCK",
        "TABLOCK",
        "TABLOCKX",
        "PAGLOCK",
        "NOLOCK",
        "READUNCOMMITTED",
        "READPAST",
    }
)


def committed_versions(engine: Engine, me: EngineSession, table: Table) -> dict[int, Optional[Row]]:
    """Row id -> committed version (None: not committed, i.e. inserted by an open transaction) of every
    row of ``table`` that *another* session changed and has not committed yet."""
    out: dict[int, Optional[Row]] = {}
    for session in engine.sessions.values():
        if session is me or not session.undo:
            continue
        for entry in session.undo:  # oldest first: the first entry per row holds its committed version
            if entry[1] is not table:
                continue
            op = entry[0]
            if op == "ins":
                out.setdefault(entry[2], None)
            elif op == "del":
                out.setdefault(entry[2], entry[3])
            elif op == "upd":
                for rowid, old in entry[2]:
                    out.setdefault(rowid, old)
            elif op == "trunc":
                for rowid, old in entry[2].items():
                    out.setdefault(rowid, old)
    return out


def snapshot_rows(
    candidates: Iterable[tuple[int, Row]], key: Any, versions: dict[int, Optional[Row]]
) -> tuple[Iterable[tuple[int, Row]], Any]:
    """The candidate rows of an access path as a snapshot reader sees them.

    Rows other sessions changed are replaced by their committed versions; those versions are added
    whatever the access path (their key may have changed), the statement's WHERE clause filters them.
    """
    if not versions:
        return candidates, key
    rows = [(rowid, row) for rowid, row in candidates if rowid not in versions]
    rows.extend((rowid, old) for rowid, old in versions.items() if old is not None)
    return rows, key


def effective_hints(engine: Engine, hints: list[str]) -> list[str]:
    """The table hints a statement runs with: none where the profile ignores them (Babelfish)."""
    return [] if hints and engine.profile.ignore_table_hints else hints
