"""The stand-in's secondary-index bookkeeping under sweeps: dead entries are dropped, results stay exact."""

from __future__ import annotations

from datetime import datetime

import pytest

from beaker_mssql.testing.clock import Clock
from beaker_mssql.testing.engine import Engine
from beaker_mssql.testing.results import Message, ResultSet

T = "[dbo].[sweepme]"


def _rows(events: list) -> list[tuple]:
    assert not [e for e in events if isinstance(e, Message) and e.is_error], events
    return [row for e in events if isinstance(e, ResultSet) for row in e.rows]


@pytest.mark.parametrize("live_every", [0, 7])
def test_batched_sweep_deletes_exactly_the_expired_rows(live_every: int) -> None:
    # 6,000 rows expiring one second apart (some, every `live_every`-th, far in the future), swept
    # in DELETE TOP (500) batches: enough deletions to trigger the index's dead-entry clean-up many
    # times, from the front (all expired first) and with live rows interleaved.
    clock = Clock()
    clock.freeze()
    clock.set(datetime(2024, 1, 1))
    session = Engine(clock).connect()
    _rows(session.execute(
        f"CREATE TABLE {T} ([sid] nvarchar(255) NOT NULL PRIMARY KEY, [expires] datetime NOT NULL);"
        f"CREATE INDEX [IX_sweepme_expires] ON {T} ([expires]);"
    ))
    total, live = 6000, 0
    for start in range(0, total, 500):
        values = []
        for i in range(start, start + 500):
            keep = live_every and i % live_every == 0
            live += bool(keep)
            seconds = 10**6 + i if keep else i - total  # expired rows lie in the past
            values.append(f"(N'k{i}', DATEADD(second, {seconds}, GETUTCDATE()))")
        _rows(session.execute(f"INSERT INTO {T} ([sid], [expires]) VALUES {', '.join(values)}"))
    deleted = 0
    while True:
        events = session.execute(f"DELETE TOP (500) FROM {T} WHERE [expires] <= GETUTCDATE()")
        _rows(events)
        count = next(e.count for e in events if getattr(e, "count", None) is not None)
        deleted += count
        # After every batch the index still answers range and point queries exactly.
        (remaining_expired,) = _rows(session.execute(
            f"SELECT COUNT(*) FROM {T} WHERE [expires] <= GETUTCDATE()"))[0]
        assert remaining_expired == total - live - deleted
        if count < 500:
            break
    assert deleted == total - live
    assert _rows(session.execute(f"SELECT COUNT(*) FROM {T} WHERE [expires] > GETUTCDATE()")) == [(live,)]
    if live_every:
        first_live = _rows(session.execute(f"SELECT MIN([expires]) FROM {T}"))[0][0]
        assert first_live > clock.utcnow()
