"""What the T-SQL engine hands to the wire protocol: typed result sets, row counts and messages.

This module is the contract between ``engine`` (which knows SQL) and ``tds`` (which knows bytes):
the engine never builds a token, the protocol layer never looks at SQL.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Optional, Union


class SqlType(enum.Enum):
    """The column types the stand-in can store and return."""

    TINYINT = "tinyint"
    SMALLINT = "smallint"
    INT = "int"
    BIGINT = "bigint"
    BIT = "bit"
    FLOAT = "float"
    NVARCHAR = "nvarchar"      # Column.length: characters, or MAX (-1) -> sent as PLP
    VARBINARY = "varbinary"    # Column.length: bytes, or MAX (-1) -> sent as PLP
    DATETIME = "datetime"      # values are naive datetimes already rounded to 1/300 s


MAX = -1  # Column.length for nvarchar(max) / varbinary(max)


@dataclass(frozen=True)
class Column:
    name: str
    type: SqlType
    length: int = 0
    nullable: bool = True


@dataclass
class ResultSet:
    """One result set: Python values (int, bool, float, str, bytes, datetime, None) per column."""

    columns: list[Column]
    rows: list[tuple[Any, ...]] = field(default_factory=list)


@dataclass
class Done:
    """End of one statement. ``count`` None means no COUNT bit (rowcount -1 for the client)."""

    count: Optional[int] = None
    error: bool = False


@dataclass
class Message:
    """An ERROR (severity > 10) or INFO token, as SQL Server would send it."""

    number: int
    severity: int
    state: int
    text: str
    line: int = 1
    procedure: str = ""

    @property
    def is_error(self) -> bool:
        return self.severity > 10


@dataclass
class DatabaseChanged:
    """`USE [db]` succeeded: the protocol layer sends an ENVCHANGE."""

    new: str
    old: str


Event = Union[ResultSet, Done, Message, DatabaseChanged]


class SQLError(Exception):
    """An error with SQL Server's number, severity and state, raised inside the engine and by faults."""

    def __init__(self, number: int, message: str, severity: int = 16, state: int = 1, line: int = 1,
                 *, context: Optional[dict[str, Any]] = None) -> None:
        super().__init__(f"Msg {number}, Level {severity}, State {state}: {message}")
        # What an engine profile needs to restate the error in another engine's words (profiles.py).
        self.context: dict[str, Any] = context or {}
        self.number = number
        self.message = message
        self.severity = severity
        self.state = state
        self.line = line

    def to_message(self) -> Message:
        return Message(self.number, self.severity, self.state, self.message, self.line)
