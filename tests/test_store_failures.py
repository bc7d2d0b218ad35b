"""Retries, broken connections, error mapping, events and logging (stand-in faults and counters)."""

from __future__ import annotations

import logging

import pytest
from helpers import new_sid as sid
from helpers import run_threads

from beaker_mssql import ConnectionFailedError, DatabaseError, PoolTimeoutError, config

GET = r"SELECT \[session\]"


def warm(store):
    store.get(sid())


@pytest.mark.parametrize("number", [1205, 1222])
def test_transient_error_retried_exactly_retries_times(standin, make_store, number):
    s = make_store(retries=2)
    seen = []
    s.events.on("error", lambda exc, method: seen.append(method))
    warm(s)
    standin.faults.raise_error(number, times=2, pattern=GET)
    assert s.get(sid()) is None  # third attempt succeeds
    assert seen == ["get", "get"]
    standin.faults.raise_error(number, times=3, pattern=GET)
    with pytest.raises(DatabaseError) as info:
        s.get(sid())
    assert info.value.number == number and info.value.method == "get"
    assert len(seen) == 5


def test_no_retry_when_retries_zero(standin, make_store):
    s = make_store(retries=0)
    warm(s)
    standin.faults.raise_error(1205, times=1, pattern=GET)
    with pytest.raises(DatabaseError, match="1205"):
        s.get(sid())
    assert s.get(sid()) is None


def test_deadlock_on_upsert_retried(standin, make_store):
    s = make_store(retries=1)
    k = sid()
    s.set(k, "v1")
    standin.faults.raise_error(1205, times=1, pattern=r"UPDATE")
    s.set(k, "v2")
    assert s.get(k) == "v2"


def test_dropped_connection_discarded_and_retried(standin, make_store):
    s = make_store(retries=1, pool_size=1)
    k = sid()
    s.set(k, "x")
    standin.reset_stats()
    standin.faults.drop_next_request()
    assert s.get(k) == "x"  # retried on a new connection
    assert standin.stats()["logins"] == 1
    stats = s.pool.stats()
    assert stats["discarded"] == 1 and stats["size"] == 1


def test_dropped_connection_without_retries_fails_clearly(standin, make_store):
    s = make_store(retries=0)
    warm(s)
    standin.faults.drop_next_request()
    with pytest.raises(ConnectionFailedError) as info:
        s.get(sid())
    assert info.value.method == "get"
    assert s.pool.stats()["size"] == 0  # never returned to the pool
    assert s.get(sid()) is None  # and the next call logs in again


def test_drop_twice_with_one_retry_fails(standin, make_store):
    s = make_store(retries=1)
    warm(s)
    standin.faults.drop_next_request(times=2)
    with pytest.raises(ConnectionFailedError):
        s.get(sid())


@pytest.mark.pymssql_login_numbers
def test_login_refused_no_password_anywhere(standin, make_store, caplog):
    caplog.set_level(logging.DEBUG)
    s = make_store(retries=3)
    errors = []
    s.events.on("session_error", lambda exc, method: errors.append((exc, method)))
    standin.faults.refuse_logins(times=1)
    with pytest.raises(ConnectionFailedError) as info:
        s.get(sid())
    assert "18456" in str(info.value)
    if config.DEFAULT_DRIVER == "pytds":  # python-tds reports this login's own number
        assert info.value.number == 18456
    assert standin.stats()["logins"] <= 1  # a refused login is not retried
    assert errors and errors[0][1] == "get"
    assert standin.password not in str(info.value)
    assert standin.password not in caplog.text
    assert standin.password not in repr(s) and standin.password not in repr(s.settings)


def test_wrong_password_message(standin, make_store):
    url = standin.url.replace(standin.password.replace("@", "%40"), "wrong-password")
    s = make_store(url=url, retries=0)
    with pytest.raises(ConnectionFailedError) as info:
        s.get(sid())
    assert "wrong-password" not in str(info.value)


def test_connect_event_and_option(standin, make_store):
    calls = []
    s = make_store(on_connect=lambda info: calls.append(info))
    s.get(sid())
    s.get(sid())
    assert len(calls) == 1 and calls[0]["database"] == standin.database
    assert "password" not in calls[0]


def test_failing_callback_does_not_break_requests(standin, make_store):
    def boom(*args):
        raise RuntimeError("monitoring is down")

    s = make_store(on_connect=boom, on_error=boom)
    assert s.get(sid()) is None


def test_session_error_hook_gets_method(standin, make_store):
    s = make_store(retries=0)
    got = []
    s.events.on("session_error", lambda exc, method: got.append((type(exc).__name__, method)))
    warm(s)
    standin.faults.raise_error(1205, times=1, pattern=r"DELETE")
    with pytest.raises(DatabaseError):
        s.destroy(sid())
    assert got == [("DatabaseError", "destroy")]


def test_pool_timeout_through_store(standin, make_store):
    s = make_store(pool_size=1, pool_max_overflow=0, pool_timeout=0.2)
    reported = []
    s.events.on("session_error", lambda exc, method: reported.append((type(exc).__name__, method)))
    lock = s.acquire_applock("hold")  # pins the only connection to this thread
    err = run_threads(lambda _: s.get(sid()), 1)  # another thread finds no free connection
    lock.release()
    assert err and isinstance(err[0], PoolTimeoutError)
    assert "pool_size" in str(err[0])
    assert reported == [("PoolTimeoutError", "get")]
    assert s.pool.stats()["timeouts"] == 1


def test_pinned_connection_serves_same_thread(standin, make_store):
    s = make_store(pool_size=1, pool_max_overflow=0, pool_timeout=0.2)
    lock = s.acquire_applock("hold")
    s.set(sid(), "x")  # same thread: uses the pinned connection, no deadlock
    lock.release()
    assert s.pool.stats()["checked_out"] == 0


def test_insert_race_2627_runs_batch_again(standin, make_store):
    """A 2627 on the INSERT (a concurrent first save where hints are ignored, as on Babelfish):
    XACT_ABORT rolled back, the batch runs once more and succeeds (not counted as a retry)."""
    s = make_store(retries=0)
    warm(s)
    k = sid()
    standin.reset_stats()
    standin.faults.raise_error(2627, times=1, pattern=r"^\s*INSERT")
    s.set(k, "x")
    assert s.get(k) == "x"
    assert standin.stats()["requests"] == 3  # failed batch, the batch again, the get


def test_applock_login_failure_fires_the_hooks(standin, make_store):
    # The app-lock path holds its connection outside the usual retry loop; its failures must still
    # reach the error and session_error hooks like every other store method's.
    s = make_store()
    errors, session_errors = [], []
    s.events.on("error", lambda exc, method: errors.append(method))
    s.events.on("session_error", lambda exc, method: session_errors.append((type(exc), method)))
    standin.faults.refuse_logins(times=1)
    with pytest.raises(ConnectionFailedError):
        s.acquire_applock("hooked", timeout_ms=0)
    assert errors == ["applock"]
    assert session_errors == [(ConnectionFailedError, "applock")]
