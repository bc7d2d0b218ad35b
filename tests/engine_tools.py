"""Helpers shared by the engine-level tests (no network) and the per-profile stand-in tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from beaker_mssql.testing import SQLServerStandIn
from beaker_mssql.testing.engine import EngineSession
from beaker_mssql.testing.profiles import PROFILES
from beaker_mssql.testing.results import Message, ResultSet


def errs(events: list) -> list[Message]:
    """The error messages among an engine call's events."""
    return [e for e in events if isinstance(e, Message) and e.is_error]


def q(s: EngineSession, sql: str) -> list[tuple]:
    """The rows of ``sql``, which must raise no error."""
    ev = s.execute(sql)
    assert not errs(ev), errs(ev)
    return [r for e in ev if isinstance(e, ResultSet) for r in e.rows]


def err(s: EngineSession, sql: str) -> Message:
    """The one error ``sql`` raises."""
    e = errs(s.execute(sql))
    assert len(e) == 1, e
    return e[0]


@contextmanager
def one_standin_per_profile() -> Iterator[dict[str, SQLServerStandIn]]:
    """A running stand-in for each engine profile, by name; all closed at the end."""
    started = {name: SQLServerStandIn(profile=name).start() for name in sorted(PROFILES)}
    try:
        yield started
    finally:
        for server in started.values():
            server.close()
