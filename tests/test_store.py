"""MSSQLStore alone (no Beaker), through pymssql to the stand-in or to BEAKER_MSSQL_TEST_URL."""

from __future__ import annotations

import logging
import threading
import uuid

import pytest
from helpers import new_sid as sid
from helpers import run_threads

from beaker_mssql import (
    InvalidSessionId,
    SidCaseConflictError,
    TableMissingError,
)


@pytest.fixture
def store(make_store):
    return make_store(pool_size=2, ttl=3600)


def test_construction_does_no_io(make_store):
    # A closed port: constructing must not try it.
    s = make_store(url="mssql://u:p@127.0.0.1:1/db")
    assert s.pool.stats()["connects"] == 0


def test_get_set_overwrite(store):
    k = sid()
    assert store.get(k) is None
    store.set(k, "one")
    assert store.get(k) == "one"
    store.set(k, "two")
    assert store.get(k) == "two"
    assert store.length() == 1


def test_text_roundtrips_unchanged(store):
    k = sid()
    data = "O'Brien ü € 日本 \\ %(x)s [x] " + "z" * 20000
    store.set(k, data)
    assert store.get(k) == data


def test_touch_and_destroy(store):
    k = sid()
    assert store.touch(k) is False
    store.set(k, "x")
    assert store.touch(k, ttl=10) is True
    assert store.destroy(k) is True
    assert store.destroy(k) is False
    assert store.get(k) is None


def test_length_all_clear(store):
    keys = sorted(sid() for _ in range(5))
    for k in keys:
        store.set(k, k.upper())
    assert store.length() == 5
    assert store.all() == {k: k.upper() for k in keys}
    assert list(store.all()) == keys
    assert store.clear() == 5
    assert store.length() == 0 and store.all() == {}


def test_clear_in_batches(make_store):
    s = make_store(auto_remove_batch_size=3)
    for _ in range(7):
        s.set(sid(), "x")
    assert s.clear() == 7
    assert s.length() == 0


def test_sid_is_case_sensitive(store, caplog):
    caplog.set_level(logging.WARNING, logger="beaker_mssql.security")
    lower = "abc" + sid()
    store.set(lower, "owner")
    assert store.get(lower.upper()) is None  # the BIN2 predicate: no case-insensitive match
    assert store.touch(lower.upper()) is False
    assert store.destroy(lower.upper()) is False
    with pytest.raises(SidCaseConflictError, match="letter case"):
        store.set(lower.upper(), "attacker")
    assert store.get(lower) == "owner"
    assert any(r.name == "beaker_mssql.security" for r in caplog.records)


@pytest.mark.parametrize("bad", ["", "x" * 256, "a\x00b", "a\nb", "abc ", None, 42, b"abc"])
def test_invalid_sids_rejected_before_sending(store, bad):
    with pytest.raises(InvalidSessionId):
        store.get(bad)
    with pytest.raises(InvalidSessionId):
        store.set(bad, "x")
    with pytest.raises(InvalidSessionId):
        store.destroy(bad)
    assert store.pool.stats()["connects"] == 0  # nothing was sent


def test_refused_sid_is_not_logged_whole(store, caplog):
    caplog.set_level(logging.WARNING, logger="beaker_mssql.security")
    live = sid()
    with pytest.raises(InvalidSessionId) as info:
        store.get(live + " ")  # a live id with a trailing space: must not end up in a log whole
    assert live[:8] in caplog.text
    assert live not in caplog.text and live not in str(info.value)


def test_invalid_sid_not_sent_counts(standin, make_store):
    s = make_store()
    standin.reset_stats()
    with pytest.raises(InvalidSessionId):
        s.set("x" * 300, "x")
    assert standin.stats()["requests"] == 0 and standin.stats()["logins"] == 0


def test_max_length_sid_ok(store):
    k = "a" * 255
    store.set(k, "x")
    assert store.get(k) == "x"


def test_set_is_one_round_trip(standin, make_store):
    s = make_store()
    k = sid()
    s.set(k, "warm-up")  # login
    standin.reset_stats()
    s.set(k, "again")
    s.set(sid(), "new row")
    assert s.get(k) == "again"
    stats = standin.stats()
    assert stats["requests"] == 3 and stats["logins"] == 0


def test_expiry_uses_server_clock(standin, make_store):
    s = make_store()
    k = sid()
    s.set(k, "x", ttl=60)
    s.set(sid(), "long", ttl=3600)
    standin.clock.advance(61)
    assert s.get(k) is None  # never returns an expired row
    assert s.touch(k) is False
    assert s.length() == 1 and len(s.all()) == 1
    assert s.destroy_expired() == 1
    assert s.stats()["expired"] == 0


def test_destroy_expired_batches_and_progress(standin, make_store):
    s = make_store()
    for _ in range(25):
        s.set(sid(), "x", ttl=10)
    s.set(sid(), "live", ttl=1000)
    standin.clock.advance(11)
    seen = []
    assert s.destroy_expired(batch_size=10, progress=seen.append) == 25
    assert seen == [10, 20, 25]
    assert s.length() == 1


def test_stats(store, mssql_profile):
    store.set(sid(), "abc")
    stats = store.stats()
    assert stats["live"] == 1 and stats["expired"] == 0
    # nvarchar: 2 bytes a character (UTF-16); Babelfish stores UTF-8 (profile data)
    assert stats["data_bytes"] == 3 * (1 if mssql_profile.datalength_utf8 else 2)
    assert stats["server_time"] is not None and stats["newest_expires"] is not None


def test_table_missing_says_how_to_create(make_store):
    s = make_store(table="no_such_table_" + uuid.uuid4().hex[:8])
    with pytest.raises(TableMissingError) as info:
        s.get(sid())
    message = str(info.value)
    assert "beaker-mssql create-table" in message and "create_table = true" in message
    assert "sql/create_sessions.sql" in message


def test_create_table_on_first_use_once(make_store, scratch_table):
    a = make_store(table=scratch_table, create_table="true")
    b = make_store(table=scratch_table, create_table=True)
    k = sid()
    a.set(k, "x")
    assert b.get(k) == "x"
    assert a.check_table() == []
    a.create_table()  # idempotent


def test_check_table_reports_problems(mssql_server, make_store, scratch_table):
    mssql_server.execute(
        f"CREATE TABLE [dbo].[{scratch_table}] ([sid] nvarchar(50) NULL, [session] nvarchar(max) NOT NULL)"
    )
    problems = make_store(table=scratch_table).check_table()
    text = "\n".join(problems)
    assert "[expires] is missing" in text and "primary key" in text and "[sid]" in text
    missing = make_store(table="nope_" + uuid.uuid4().hex[:6])
    assert missing.check_table()[0].endswith("does not exist")


def test_concurrent_threads(store):
    shared = sid()
    own = {}

    def work(i):
        mine = sid()
        own[i] = mine
        for n in range(10):
            store.set(shared, f"{i}-{n}")
            store.set(mine, f"v{n}")
            assert store.get(mine) == f"v{n}"
            assert store.get(shared) is not None

    assert run_threads(work, 16) == []
    assert all(store.get(v) == "v9" for v in own.values())
    assert store.length() == 17


def test_first_uses_concurrent(make_store):
    s = make_store(pool_size=8)
    barrier = threading.Barrier(8)

    def first(_):
        barrier.wait()
        s.get(sid())

    assert run_threads(first, 8) == []


def test_applock_exclusive(store):
    lock = store.acquire_applock("test-lock")
    assert lock is not None
    other = []
    t = threading.Thread(target=lambda: other.append(store.acquire_applock("test-lock", timeout_ms=0)))
    t.start()
    t.join()
    assert other == [None]
    lock.release()

    def take_and_release():
        got = store.acquire_applock("test-lock", timeout_ms=0)
        other.append(got)
        if got is not None:
            got.release()

    t = threading.Thread(target=take_and_release)
    t.start()
    t.join()
    assert other[1] is not None
    assert store.pool.stats()["checked_out"] == 0
