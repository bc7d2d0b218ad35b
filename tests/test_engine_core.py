"""Engine tests straight against beaker_mssql.testing.engine (no network)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from helpers import wait_until

from beaker_mssql.testing.clock import Clock
from beaker_mssql.testing.engine import Engine, EngineSession
from beaker_mssql.testing.results import Done, Message, ResultSet

T = "[dbo].[sessions]"
CREATE = f"""IF OBJECT_ID(N'{T}', N'U') IS NULL
BEGIN
    CREATE TABLE {T} (
        [sid] nvarchar(255) NOT NULL PRIMARY KEY,
        [session] nvarchar(max) NOT NULL,
        [expires] datetime NOT NULL
    );
END;
IF INDEXPROPERTY(OBJECT_ID(N'{T}'), N'IX_sessions_expires', 'IndexID') IS NULL
    CREATE INDEX [IX_sessions_expires] ON {T} ([expires]);"""


def run_workers(worker: Callable[[int], None], n: int, timeout: float) -> None:
    """Run ``worker(0)`` .. ``worker(n - 1)`` on n threads at once; all must finish (a hang is a bug)."""
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads)


def set_batch(sid: str, data: str, ttl: int = 3600) -> str:
    return f"""SET NOCOUNT ON; SET XACT_ABORT ON;
BEGIN TRANSACTION;
UPDATE {T} WITH (UPDLOCK, SERIALIZABLE) SET [session] =
  N'{data}', [expires] = DATEADD(second, {ttl}, GETUTCDATE())
  WHERE [sid] = N'{sid}' AND [sid] = N'{sid}' COLLATE Latin1_General_BIN2;
IF @@ROWCOUNT = 0
    INSERT INTO {T} ([sid], [session], [expires])
    VALUES (N'{sid}', N'{data}', DATEADD(second, {ttl}, GETUTCDATE()));
COMMIT TRANSACTION;
SET NOCOUNT OFF;"""


@pytest.fixture
def engine() -> Engine:
    clock = Clock()
    clock.freeze()
    clock.set(datetime(2024, 2, 29, 12, 0, 0))
    return Engine(clock)


@pytest.fixture
def s(engine: Engine) -> EngineSession:
    sess = engine.connect()
    assert not errors(sess.execute(CREATE))
    return sess


def errors(events: list) -> list[Message]:
    return [e for e in events if isinstance(e, Message) and e.is_error]


def rows(events: list) -> list[tuple]:
    out = []
    for e in events:
        if isinstance(e, ResultSet):
            out.extend(e.rows)
    return out


def one_error(events: list) -> Message:
    errs = errors(events)
    assert len(errs) == 1, events
    return errs[0]


def test_set_get_roundtrip(s: EngineSession) -> None:
    assert not errors(s.execute(set_batch("abc", "data1")))
    assert not errors(s.execute(set_batch("abc", "data2")))
    ev = s.execute(
        f"SELECT [session] FROM {T} WHERE [sid] = N'abc' AND [sid] = N'abc' COLLATE Latin1_General_BIN2 "
        "AND [expires] > GETUTCDATE()"
    )
    assert rows(ev) == [("data2",)]
    assert isinstance(ev[-1], Done) and ev[-1].count == 1
    # case-insensitive PK, but the BIN2 predicate keeps ABC from matching abc
    ev = s.execute(
        f"SELECT [session] FROM {T} WHERE [sid] = N'ABC' AND [sid] = N'ABC' COLLATE Latin1_General_BIN2"
    )
    assert rows(ev) == []
    assert rows(s.execute(f"SELECT [sid] FROM {T} WHERE [sid] = N'ABC  '")) == [("abc",)]


def test_duplicate_key_ci(s: EngineSession) -> None:
    s.execute(set_batch("abc", "x"))
    err = one_error(
        s.execute(f"INSERT INTO {T} ([sid], [session], [expires]) VALUES (N'ABC', N'y', GETUTCDATE())")
    )
    assert err.number == 2627 and err.severity == 14
    assert "Violation of PRIMARY KEY constraint 'PK__sessions__" in err.text
    assert err.text.endswith(
        "Cannot insert duplicate key in object 'dbo.sessions'. The duplicate key value is (ABC)."
    )


def test_statement_error_continues_batch(s: EngineSession) -> None:
    s.execute(set_batch("k", "x"))
    ev = s.execute(
        f"SET XACT_ABORT OFF; INSERT INTO {T} VALUES (N'k', N'y', GETUTCDATE()); SELECT COUNT(*) FROM {T}"
    )
    assert one_error(ev).number == 2627
    assert rows(ev) == [(1,)]


def test_syntax_error_runs_nothing(s: EngineSession) -> None:
    ev = s.execute(f"INSERT INTO {T} VALUES (N'a', N'y', GETUTCDATE());\nSELECT * FRM {T}")
    err = one_error(ev)
    assert err.number == 102 and err.line == 2
    assert rows(s.execute(f"SELECT COUNT(*) FROM {T}")) == [(0,)]
    err = one_error(s.execute("SELECT * FROM"))
    assert err.number == 156 and "keyword 'FROM'" in err.text


def test_missing_objects(s: EngineSession) -> None:
    err = one_error(s.execute("SELECT * FROM dbo.nope"))
    assert (err.number, err.text) == (208, "Invalid object name 'dbo.nope'.")
    err = one_error(s.execute(f"SELECT [nope] FROM {T}"))
    assert (err.number, err.text) == (207, "Invalid column name 'nope'.")
    # 207 on an existing table is a compile error: nothing in the batch runs
    ev = s.execute(f"INSERT INTO {T} VALUES (N'a', N'y', GETUTCDATE()); SELECT nope FROM {T}")
    assert one_error(ev).number == 207
    assert rows(s.execute(f"SELECT COUNT(*) FROM {T}")) == [(0,)]
    ev = s.execute(f"INSERT INTO {T} VALUES (N'a', N'y', GETUTCDATE()); IF 1 = 0 SELECT nope FROM {T}")
    assert one_error(ev).number == 207
    assert rows(s.execute(f"SELECT COUNT(*) FROM {T}")) == [(0,)]
    # 208 is raised at execution: earlier statements ran
    ev = s.execute(f"INSERT INTO {T} VALUES (N'a', N'y', GETUTCDATE()); SELECT * FROM missing; SELECT 1")
    assert one_error(ev).number == 208
    assert rows(ev) == []
    assert rows(s.execute(f"SELECT COUNT(*) FROM {T}")) == [(1,)]


def test_truncation_and_null(s: EngineSession) -> None:
    long_sid = "x" * 256
    err = one_error(s.execute(f"INSERT INTO {T} VALUES (N'{long_sid}', N'y', GETUTCDATE())"))
    assert err.number == 2628
    assert err.text == (
        "String or binary data would be truncated in table 'test.dbo.sessions', column 'sid'. "
        f"Truncated value: '{'x' * 255}'."
    )
    err = one_error(s.execute(f"INSERT INTO {T} VALUES (N'a', NULL, GETUTCDATE())"))
    assert err.number == 515
    assert err.text == (
        "Cannot insert the value NULL into column 'session', table 'test.dbo.sessions'; column does "
        "not allow nulls. INSERT fails."
    )
    err = one_error(s.execute(f"INSERT INTO {T} ([sid], [session]) VALUES (N'a', N'b')"))
    assert err.number == 515 and "'expires'" in err.text


def test_datetime_conversion_and_rounding(s: EngineSession) -> None:
    s.execute(f"INSERT INTO {T} VALUES (N'a', N'y', '2024-02-29 13:45:06.123')")
    s.execute(f"INSERT INTO {T} VALUES (N'b', N'y', '2024-02-29 13:45:06.125')")
    s.execute(f"INSERT INTO {T} VALUES (N'c', N'y', '2024-02-29 13:45:06.999')")
    got = rows(s.execute(f"SELECT [expires] FROM {T} ORDER BY [sid]"))
    assert got == [
        (datetime(2024, 2, 29, 13, 45, 6, 123000),),
        (datetime(2024, 2, 29, 13, 45, 6, 127000),),
        (datetime(2024, 2, 29, 13, 45, 7, 0),),
    ]
    err = one_error(s.execute(f"INSERT INTO {T} VALUES (N'd', N'y', 'not a date'); SELECT 1"))
    assert err.number == 241
    assert err.text == "Conversion failed when converting date and/or time from character string."
    err = one_error(s.execute(f"INSERT INTO {T} VALUES (N'd', N'y', '2024-02-30')"))
    assert err.number == 242


def test_conversion_errors() -> None:
    e = Engine(Clock())
    s = e.connect()
    err = one_error(s.execute("SELECT CAST(N'abc' AS int)"))
    assert (err.number, err.text) == (
        245,
        "Conversion failed when converting the nvarchar value 'abc' to data type int.",
    )
    err = one_error(s.execute("DECLARE @b varbinary(max) = N'abc'"))
    assert err.number == 257
    assert rows(s.execute("SELECT CAST('12' AS int) + 1, 7 / 2, -7 % 3, 1.5 * 2")) == [(13, 3, -1, 3.0)]
    assert one_error(s.execute("SELECT 1/0")).number == 8134


def test_transactions_nesting(s: EngineSession) -> None:
    assert one_error(s.execute("COMMIT")).number == 3902
    err = one_error(s.execute("ROLLBACK TRAN"))
    assert (err.number, err.text) == (
        3903,
        "The ROLLBACK TRANSACTION request has no corresponding BEGIN TRANSACTION.",
    )
    s.execute("BEGIN TRAN; BEGIN TRAN")
    assert rows(s.execute("SELECT @@TRANCOUNT")) == [(2,)]
    s.execute(f"INSERT INTO {T} VALUES (N'a', N'y', GETUTCDATE()); COMMIT")
    assert s.trancount == 1
    s.execute("ROLLBACK")
    assert s.trancount == 0
    assert rows(s.execute(f"SELECT COUNT(*) FROM {T}")) == [(0,)]
    s.execute(
        f"BEGIN TRAN; INSERT INTO {T} VALUES (N'a', N'y', GETUTCDATE()); SAVE TRAN sp1; "
        f"INSERT INTO {T} VALUES (N'b', N'y', GETUTCDATE()); ROLLBACK TRAN sp1; COMMIT"
    )
    assert rows(s.execute(f"SELECT [sid] FROM {T}")) == [("a",)]


def test_xact_abort_rolls_back(s: EngineSession) -> None:
    s.execute(set_batch("k", "v"))
    ev = s.execute(
        f"SET XACT_ABORT ON; BEGIN TRAN; INSERT INTO {T} VALUES (N'n', N'y', GETUTCDATE()); "
        f"INSERT INTO {T} VALUES (N'k', N'y', GETUTCDATE()); SELECT 1"
    )
    assert one_error(ev).number == 2627
    assert rows(ev) == []
    assert s.trancount == 0
    assert rows(s.execute(f"SELECT COUNT(*) FROM {T}")) == [(1,)]
    # without XACT_ABORT the statement is undone, the transaction stays open
    ev = s.execute(
        f"SET XACT_ABORT OFF; BEGIN TRAN; INSERT INTO {T} VALUES (N'n', N'y', GETUTCDATE()); "
        f"INSERT INTO {T} VALUES (N'k', N'y', GETUTCDATE()); SELECT @@TRANCOUNT"
    )
    assert rows(ev) == [(1,)]
    s.execute("COMMIT")
    assert rows(s.execute(f"SELECT COUNT(*) FROM {T}")) == [(2,)]


def test_delete_top_like_escape_and_sweep(engine: Engine, s: EngineSession) -> None:
    values = ", ".join(f"(N'ab_c:{i}', N'v', DATEADD(second, {i - 50}, GETUTCDATE()))" for i in range(100))
    s.execute(f"INSERT INTO {T} VALUES {values}")
    s.execute(f"INSERT INTO {T} VALUES (N'abXc:1', N'v', DATEADD(second, 100, GETUTCDATE()))")
    got = rows(
        s.execute(
            f"SELECT [sid] FROM {T} WHERE [sid] LIKE N'ab\\_c:%' ESCAPE N'\\' AND [expires] > GETUTCDATE()"
        )
    )
    assert len(got) == 49 and all(r[0].startswith("ab_c:") for r in got)
    ev = s.execute(f"DELETE TOP (10) FROM {T} WHERE [expires] <= GETUTCDATE()")
    assert ev[-1] == Done(10)
    ev = s.execute(f"DELETE TOP (1000) FROM {T} WHERE [expires] <= GETUTCDATE()")
    assert ev[-1] == Done(41)
    assert rows(s.execute(f"SELECT COUNT(*) FROM {T} WHERE [expires] > GETUTCDATE()")) == [(50,)]
    ev = s.execute(f"DELETE TOP (1000) FROM {T} WHERE [sid] LIKE N'ab\\_c:%' ESCAPE N'\\'")
    assert ev[-1] == Done(49)


def test_merge(s: EngineSession) -> None:
    merge = (
        f"MERGE {T} WITH (HOLDLOCK) AS target USING (SELECT N'm' AS sid, N'{{}}' AS session) AS source "
        "ON target.[sid] = source.sid WHEN MATCHED THEN UPDATE SET [session] = source.session "
        "WHEN NOT MATCHED THEN INSERT ([sid], [session], [expires]) VALUES (source.sid, source.session, "
        "GETUTCDATE());"
    )
    assert s.execute(merge.replace("{}", "one"))[-1] == Done(1)
    assert s.execute(merge.replace("{}", "two"))[-1] == Done(1)
    assert rows(s.execute(f"SELECT [session] FROM {T}")) == [("two",)]
    err = one_error(s.execute(merge.rstrip(";")))
    assert err.number == 10713
    values_merge = (
        f"MERGE {T} AS t USING (VALUES (N'v', N'x')) AS src (sid, data) ON t.sid = src.sid "
        "WHEN NOT MATCHED BY TARGET THEN INSERT (sid, session, expires) VALUES (src.sid, src.data, "
        "GETUTCDATE());"
    )
    assert s.execute(values_merge)[-1] == Done(1)


def test_applocks(engine: Engine) -> None:
    a = engine.connect()
    b = engine.connect()
    get = (
        "DECLARE @result int; EXEC @result = sp_getapplock @Resource = N'beaker_mssql:x', @LockMode = "
        "N'Exclusive', @LockOwner = N'Session', @LockTimeout = 0; SELECT @result AS [result];"
    )
    rel = (
        "DECLARE @result int; EXEC @result = sp_releaseapplock @Resource = N'beaker_mssql:x', @LockOwner = "
        "N'Session'; SELECT @result AS [result];"
    )
    assert rows(a.execute(get)) == [(0,)]
    assert rows(b.execute(get)) == [(-1,)]
    ev = b.execute(rel)
    assert rows(ev) == [(-999,)] and one_error(ev).number == 1223
    assert rows(a.execute(rel)) == [(0,)]
    assert rows(b.execute(get)) == [(0,)]
    b.close()
    assert rows(a.execute(get)) == [(0,)]
    ev = a.execute(
        "DECLARE @r int; EXEC @r = sp_getapplock @Resource = N'q', @LockMode = N'Shared'; SELECT @r"
    )
    assert rows(ev) == [(-999,)]


def test_catalog(s: EngineSession) -> None:
    got = rows(
        s.execute(
            "SELECT COLUMN_NAME, DATA_TYPE, CHARACTER_MAXIMUM_LENGTH, IS_NULLABLE FROM "
            "INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = N'dbo' AND TABLE_NAME = N'sessions' "
            "ORDER BY ORDINAL_POSITION"
        )
    )
    assert got == [
        ("sid", "nvarchar", 255, "NO"),
        ("session", "nvarchar", -1, "NO"),
        ("expires", "datetime", None, "NO"),
    ]
    got = rows(
        s.execute(
            "SELECT i.name, i.is_primary_key, i.is_unique, ic.key_ordinal, "
            "COL_NAME(ic.object_id, ic.column_id) AS "
            "column_name FROM sys.indexes AS i JOIN sys.index_columns AS ic "
            "ON ic.object_id = i.object_id AND "
            f"ic.index_id = i.index_id WHERE i.object_id = OBJECT_ID(N'{T}') ORDER BY i.name, ic.key_ordinal"
        )
    )
    assert got[0] == ("IX_sessions_expires", False, False, 1, "expires")
    assert got[1][0].startswith("PK__sessions__") and got[1][1:] == (True, True, 1, "sid")


def test_use_and_globals(engine: Engine) -> None:
    s = engine.connect()
    ev = s.execute("USE master")
    assert any(getattr(e, "new", None) == "master" for e in ev)
    err = one_error(s.execute("USE nope"))
    assert err.number == 911
    r = rows(s.execute("SELECT @@SPID, @@TRANCOUNT, DB_NAME()"))
    assert r == [(s.session_id, 0, "master")]
    assert "stand-in" in rows(s.execute("SELECT @@VERSION"))[0][0]


def test_pymssql_connect_options(engine: Engine) -> None:
    s = engine.connect()
    ev = s.execute(
        "SET ARITHABORT ON;SET CONCAT_NULL_YIELDS_NULL ON;SET ANSI_NULLS ON;SET ANSI_NULL_DFLT_ON ON;"
        "SET ANSI_PADDING ON;SET ANSI_WARNINGS ON;SET ANSI_NULL_DFLT_ON ON;SET CURSOR_CLOSE_ON_COMMIT ON;"
        "SET QUOTED_IDENTIFIER ON;SET TEXTSIZE 2147483647;"
    )
    assert not errors(ev)
    assert one_error(s.execute("SET FOO ON")).number == 195
    assert one_error(s.execute("SET ANSI_NULLS OFF")).number == 102


def interleave(engine: Engine, steps_a: list[str], steps_b: list[str]) -> tuple[list, list]:
    """Run two sessions' statements alternately (A1, B1, A2, B2, ...). Each session has a worker thread
    executing its steps in order; the driver moves on once a step has finished or its session waits
    on a lock (it then stays queued while the other session goes on). Never on elapsed time: a step
    that is merely slow under load is waited for, so the interleaving is the same on any machine."""
    import queue

    a, b = engine.connect(), engine.connect()
    outs: tuple[list, list] = ([], [])

    def worker(sess: EngineSession, q: queue.Queue, out: list) -> None:
        while True:
            st = q.get()
            if st is None:
                return
            out.append(sess.execute(st))

    qs = (queue.Queue(), queue.Queue())
    threads = [threading.Thread(target=worker, args=(sess, qs[i], outs[i])) for i, sess in enumerate((a, b))]
    for t in threads:
        t.start()
    puts = [0, 0]
    for i in range(max(len(steps_a), len(steps_b))):
        for side, (sess, steps) in enumerate(zip((a, b), (steps_a, steps_b))):
            if i < len(steps):
                qs[side].put(steps[i])
                puts[side] += 1
                assert wait_until(
                    lambda side=side, sess=sess: len(outs[side]) == puts[side]
                    or sess.session_id in engine.locks.waits
                ), f"step {i} of session {'AB'[side]} neither finished nor waited on a lock"
    for q in qs:
        q.put(None)
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    return outs


def race_steps(hint: str) -> list[str]:
    return [
        "BEGIN TRAN",
        f"UPDATE {T} {hint} SET [session] = N'v' WHERE [sid] = N'k'",
        f"IF @@ROWCOUNT = 0 INSERT INTO {T} ([sid], [session], [expires]) VALUES (N'k', N'v', GETUTCDATE())",
        "COMMIT",
    ]


def test_race_without_hints_hits_2627(engine: Engine, s: EngineSession) -> None:
    out_a, out_b = interleave(engine, race_steps(""), race_steps(""))
    nums = [m.number for ev in out_a + out_b for m in errors(ev)]
    assert nums == [2627]


def test_race_with_updlock_serializable_waits(engine: Engine, s: EngineSession) -> None:
    out_a, out_b = interleave(
        engine, race_steps("WITH (UPDLOCK, SERIALIZABLE)"), race_steps("WITH (UPDLOCK, SERIALIZABLE)")
    )
    assert [m for ev in out_a + out_b for m in errors(ev)] == []
    assert rows(s.execute(f"SELECT COUNT(*) FROM {T}")) == [(1,)]


def test_serializable_read_then_insert_deadlocks(engine: Engine, s: EngineSession) -> None:
    steps = [
        "BEGIN TRAN",
        f"SELECT [sid] FROM {T} WITH (SERIALIZABLE) WHERE [sid] = N'k'",
        f"INSERT INTO {T} ([sid], [session], [expires]) VALUES (N'k', N'v', GETUTCDATE())",
        "COMMIT",
    ]
    out_a, out_b = interleave(engine, steps, steps)
    nums = sorted(m.number for ev in out_a + out_b for m in errors(ev))
    assert nums[0] == 1205 and 2627 not in nums


def test_update_serializable_alone_serializes(engine: Engine, s: EngineSession) -> None:
    # an UPDATE's range locks are RangeS-U: two of them on a missing key conflict, so no 2627
    out_a, out_b = interleave(engine, race_steps("WITH (SERIALIZABLE)"), race_steps("WITH (SERIALIZABLE)"))
    assert [m for ev in out_a + out_b for m in errors(ev)] == []


def test_sixteen_threads_one_key(engine: Engine, s: EngineSession) -> None:
    failures: list = []

    def worker(i: int) -> None:
        sess = engine.connect()
        for j in range(20):
            ev = sess.execute(set_batch("hot", f"{i}-{j}"))
            failures.extend(errors(ev))
        sess.close()

    run_workers(worker, 16, timeout=30)
    assert failures == []
    assert rows(s.execute(f"SELECT COUNT(*) FROM {T}")) == [(1,)]


def test_lock_timeout_and_readers_block(engine: Engine, s: EngineSession) -> None:
    s.execute(set_batch("k", "v"))
    a, b = engine.connect(), engine.connect()
    a.execute(f"BEGIN TRAN; UPDATE {T} SET [session] = N'w' WHERE [sid] = N'k'")
    err = one_error(b.execute(f"SET LOCK_TIMEOUT 0; SELECT [session] FROM {T} WHERE [sid] = N'k'"))
    assert (err.number, err.text) == (1222, "Lock request time out period exceeded.")
    assert rows(b.execute(f"SELECT [session] FROM {T} WITH (NOLOCK) WHERE [sid] = N'k'")) == [("w",)]
    assert one_error(b.execute(f"SET LOCK_TIMEOUT -1; SELECT * FROM {T} WITH (NOWAIT)")).number == 1222
    assert rows(b.execute(f"SELECT [session] FROM {T} WITH (READPAST)")) == []
    result: list = []
    t = threading.Thread(
        target=lambda: result.append(
            b.execute(f"SET LOCK_TIMEOUT -1; SELECT [session] FROM {T} WHERE [sid] = N'k'")
        )
    )
    t.start()
    assert wait_until(lambda: b.session_id in engine.locks.waits)  # blocked on a's lock, not just slow
    assert t.is_alive() and result == []
    a.execute("COMMIT")
    t.join(60)
    assert rows(result[0]) == [("w",)]


def test_cancel_while_waiting(engine: Engine, s: EngineSession) -> None:
    from beaker_mssql.testing.engine import Cancelled

    s.execute(set_batch("k", "v"))
    a, b = engine.connect(), engine.connect()
    a.execute(f"BEGIN TRAN; UPDATE {T} SET [session] = N'w' WHERE [sid] = N'k'")
    cancel = threading.Event()
    caught: list = []

    def go() -> None:
        try:
            b.execute(f"SELECT * FROM {T}", cancel)
        except Cancelled:
            caught.append(True)

    t = threading.Thread(target=go)
    t.start()
    assert wait_until(lambda: b.session_id in engine.locks.waits)  # cancel it *while* it waits
    cancel.set()
    t.join(60)
    assert caught == [True]
    a.close()
    assert rows(b.execute(f"SELECT [session] FROM {T}")) == [("v",)]


def test_persistence(tmp_path) -> None:
    path = str(tmp_path / "db.json")
    clock = Clock()
    e = Engine(clock, data_file=path)
    s = e.connect()
    s.execute(CREATE)
    s.execute(set_batch("k", "v"))
    s.execute(f"BEGIN TRAN; INSERT INTO {T} VALUES (N'uncommitted', N'x', GETUTCDATE())")
    e2 = Engine(clock, data_file=path)
    s2 = e2.connect()
    assert rows(s2.execute(f"SELECT [sid], [session] FROM {T}")) == [("k", "v")]
    assert rows(s2.execute(f"SELECT OBJECT_ID(N'{T}')")) == rows(s.execute(f"SELECT OBJECT_ID(N'{T}')"))


def test_hooks_fault_injection(s: EngineSession) -> None:
    from beaker_mssql.testing.results import SQLError

    seen: list[str] = []

    class Hooks:
        def before_statement(self, session: EngineSession, sql_text: str) -> None:
            seen.append(sql_text)
            if sql_text.startswith("INSERT"):
                raise SQLError(1205, "deadlock (injected)", 13)

    s.engine.hooks = Hooks()
    ev = s.execute(set_batch("k", "v"))
    assert one_error(ev).number == 1205
    assert s.trancount == 0
    assert any("N'k'" in t for t in seen)
    s.engine.hooks = None
    assert rows(s.execute(f"SELECT COUNT(*) FROM {T}")) == [(0,)]


def test_clock_functions(engine: Engine) -> None:
    s = engine.connect()
    engine.clock.utc_offset = timedelta(hours=2)
    r = rows(
        s.execute(
            "SELECT GETUTCDATE(), GETDATE(), DATEDIFF(hour, GETUTCDATE(), GETDATE()), "
            "DATEADD(ms, 5, GETUTCDATE())"
        )
    )[0]
    assert r[0] == datetime(2024, 2, 29, 12, 0, 0)
    assert r[1] == datetime(2024, 2, 29, 14, 0, 0)
    assert r[2] == 2
    assert r[3] == datetime(2024, 2, 29, 12, 0, 0, 7000)


def test_connect_unknown_database(engine: Engine) -> None:
    from beaker_mssql.testing.results import SQLError

    with pytest.raises(SQLError) as info:
        engine.connect("nope")
    assert (info.value.number, info.value.severity) == (4060, 11)
    assert info.value.message == 'Cannot open database "nope" requested by the login. The login failed.'
    assert engine.connect("MASTER").database == "master"
    assert [engine.connect().session_id for _ in range(2)] == [52, 53]


def test_concurrent_transfers_keep_the_total(engine: Engine) -> None:
    """8 sessions move amounts between random accounts in explicit transactions (so they deadlock
    now and then): the total never changes, every failure is a deadlock victim, nothing hangs."""
    import random

    setup = engine.connect()
    setup.execute("CREATE TABLE acct (id int PRIMARY KEY, bal int NOT NULL)")
    setup.execute("INSERT INTO acct VALUES " + ", ".join(f"({i}, 100)" for i in range(6)))
    failures: list = []
    crashes: list = []

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        sess = engine.connect()
        try:
            for _ in range(60):
                a, b = rnd.sample(range(6), 2)
                amount = rnd.randint(1, 5)
                ev = sess.execute(
                    f"BEGIN TRAN; UPDATE acct SET bal = bal - {amount} WHERE id = {a}; "
                    f"UPDATE acct SET bal = bal + {amount} WHERE id = {b}; COMMIT"
                )
                failures.extend(m.number for m in errors(ev))
                if sess.trancount:
                    sess.execute("ROLLBACK")
        except Exception as exc:  # an engine bug
            crashes.append(exc)
        finally:
            sess.close()

    run_workers(worker, 8, timeout=60)
    assert crashes == []
    assert set(failures) <= {1205, 3902}
    assert rows(setup.execute("SELECT SUM(bal), COUNT(*) FROM acct")) == [(600, 6)]
    assert engine.locks.held == {}


def test_applock_wait_and_deadlock(engine: Engine) -> None:
    a, b = engine.connect(), engine.connect()

    def get(name: str, timeout: int = -1) -> str:
        return (
            f"DECLARE @r int; EXEC @r = sp_getapplock @Resource = N'{name}', @LockMode = N'Exclusive', "
            f"@LockOwner = N'Session', @LockTimeout = {timeout}; SELECT @r"
        )

    assert rows(a.execute(get("r1"))) == [(0,)]
    assert rows(b.execute(get("r2"))) == [(0,)]
    assert rows(b.execute(get("r1", 30))) == [(-1,)]
    result: list = []
    t = threading.Thread(target=lambda: result.append(rows(a.execute(get("r2")))))
    t.start()
    # a must be waiting for r2 before b asks for r1, or a (not b) would close the cycle
    assert wait_until(lambda: a.session_id in engine.locks.waits)
    assert t.is_alive() and result == []
    assert rows(b.execute(get("r1"))) == [(-3,)]  # b closes the cycle: deadlock victim
    b.execute("EXEC sp_releaseapplock @Resource = N'r2', @LockOwner = N'Session'")
    t.join(60)
    assert result == [[(1,)]]  # granted after waiting
