"""auto_remove: the background sweeper, driven directly with run_once() (no waiting)."""

from __future__ import annotations

import threading

from helpers import CallLog
from helpers import new_sid as sid

from beaker_mssql.sweeper import Sweeper, sweeper_for


def fill(store, expired, live, server):
    for _ in range(expired):
        store.set(sid(), "old", ttl=5)
    server.clock.advance(6)
    for _ in range(live):
        store.set(sid(), "new", ttl=3600)


def test_run_once_deletes_expired_in_batches(standin, make_store):
    calls = []
    s = make_store(auto_remove_batch_size=4, auto_remove_callback=lambda err, n: calls.append((err, n)))
    fill(s, 10, 2, standin)
    sweeper = Sweeper(s, start=False)
    standin.reset_stats()
    assert sweeper.run_once() == 10
    # getapplock + 3 batches (4, 4, 2) + releaseapplock
    assert standin.stats()["requests"] == 5
    assert calls == [(None, 10)]
    assert s.stats()["expired"] == 0 and s.length() == 2


def test_pre_remove_callback_failure_skips_sweep(standin, make_store):
    calls, errors = [], []

    def refuse():
        raise RuntimeError("maintenance window")

    s = make_store(pre_remove_callback=refuse, auto_remove_callback=lambda err, n: calls.append((err, n)))
    s.events.on("error", lambda exc, method: errors.append(method))
    fill(s, 3, 0, standin)
    assert Sweeper(s, start=False).run_once() is None
    assert len(calls) == 1 and isinstance(calls[0][0], RuntimeError) and calls[0][1] == 0
    assert errors == ["auto_remove"]
    assert s.stats()["expired"] == 3


def test_only_one_sweeper_at_a_time(standin, make_store):
    a, b = make_store(), make_store(pool_size=1)
    fill(a, 3, 0, standin)
    lock = b.acquire_applock("auto_remove")  # another "process" is sweeping
    try:
        result = []
        t = threading.Thread(target=lambda: result.append(Sweeper(a, start=False).run_once()))
        t.start()
        t.join()
        assert result == [None]  # @LockTimeout = 0: skipped, not waited
        assert a.stats()["expired"] == 3
    finally:
        lock.release()
    assert Sweeper(a, start=False).run_once() == 3


def test_failing_sweep_reports_and_thread_survives(standin, make_store):
    calls = []
    s = make_store(retries=0, auto_remove_callback=lambda err, n: calls.append((err, n)))
    s.get(sid())
    sweeper = Sweeper(s, interval=0.05, start=False)
    standin.faults.raise_error(1205, times=1, pattern=r"DELETE TOP")
    assert sweeper.run_once() is None
    assert calls and calls[0][0] is not None and calls[0][0].number == 1205
    assert s.pool.stats()["checked_out"] == 0  # the lock's connection went back
    assert sweeper.run_once() == 0 and calls[-1] == (None, 0)


def test_background_thread_runs_and_stops(standin, make_store):
    """The thread sweeps on its own, again and again, and store.close() ends it.

    Every wait is on the sweeper's own report (auto_remove_callback), never on time: the rows are
    expired *before* the sweeper exists, so its first run must delete exactly them. (The test used to
    write them through the sweeping store itself; a run between those inserts and the clock jump
    reported 0 rows and woke the test too early: about 1 run in 100 idle, 15 in 100 under CPU load.)
    """
    reports = CallLog()
    writer = make_store()
    fill(writer, 2, 0, standin)
    s = make_store(auto_remove="true", auto_remove_interval="0.05", auto_remove_callback=reports)
    assert s._sweeper is None
    assert s.length() == 0  # the first use starts the sweeper
    sweeper = s._sweeper
    assert sweeper is not None and sweeper.alive
    assert reports.wait_for(lambda calls: len(calls) >= 1), "the sweeper never ran"
    assert reports.snapshot()[0] == (None, 2)
    # It keeps running: a row that expires later goes in a later run (runs in between report 0).
    writer.set(sid(), "old", ttl=5)
    standin.clock.advance(6)
    assert reports.wait_for(lambda calls: sum(n for _, n in calls) >= 3), "no later run swept the new row"
    calls = reports.snapshot()
    assert all(error is None for error, _ in calls) and sum(n for _, n in calls) == 3
    assert len(calls) >= 2 and s.stats()["expired"] == 0
    s.close()
    sweeper.stop(timeout=60)  # close() already asked it to stop; this joins the thread
    assert not sweeper.alive


def test_one_sweeper_per_connection_and_table(standin, make_store):
    a = make_store(auto_remove=True, auto_remove_interval=3600)
    b = make_store(auto_remove=True, auto_remove_interval=3600, ttl=5)
    a.get(sid())
    b.get(sid())
    assert a._sweeper is b._sweeper is sweeper_for(a)
    a.close()
    assert b._sweeper.alive  # still needed by b
    b.close()


def test_a_shorter_interval_joining_a_sleeping_sweeper_takes_effect(standin, make_store):
    """The shared thread runs at the shortest interval of its stores, also when the shorter one comes
    second: it must not finish the long sleep it started for the first store."""
    slow = make_store(auto_remove=True, auto_remove_interval=3600)
    assert slow.length() == 0  # its sweeper now sleeps up to an hour before its first run
    reports = CallLog()
    fast = make_store(auto_remove=True, auto_remove_interval=0.05, auto_remove_callback=reports)
    assert fast.length() == 0
    assert fast._sweeper is slow._sweeper
    fill(make_store(), 3, 0, standin)  # written once both stores are in: every run is reported to fast
    assert reports.wait_for(lambda calls: sum(n for _, n in calls) >= 3), "the 0.05 s store was never swept"
    calls = reports.snapshot()
    assert all(error is None for error, _ in calls) and sum(n for _, n in calls) == 3


def test_no_sweeper_without_auto_remove(standin, make_store):
    s = make_store()
    s.get(sid())
    assert s._sweeper is None
