"""The connection pool.

The mechanics (LIFO, overflow, timeout, recycle, logins outside the lock) use a counting stand-in
for ``pymssql.connect`` so they run without a server; everything about real connections (broken
connections discarded, autocommit, logins counted by the server) goes through pymssql to the
SQL Server stand-in.
"""

from __future__ import annotations

import threading

import pymssql
import pytest
from helpers import run_threads, wait_until

from beaker_mssql import PoolTimeoutError, drivers
from beaker_mssql.config import parse_settings
from beaker_mssql.pool import ConnectionPool, error_number, is_broken


class FakeConnection:
    def __init__(self, n):
        self.n = n
        self.closed = False

    def close(self):
        self.closed = True


class Connector:
    """Counts logins; with a ``barrier``, each login waits there until that many are in progress at once."""

    def __init__(self, barrier=None):
        self.count = 0
        self.barrier = barrier
        self.lock = threading.Lock()

    def __call__(self, **kwargs):
        assert kwargs["autocommit"] is True
        if self.barrier is not None:
            self.barrier.wait()
        with self.lock:
            self.count += 1
            return FakeConnection(self.count)


def make_pool(connector, **kw):
    return ConnectionPool(parse_settings({}).connection, connect=connector, **kw)


def test_no_io_at_construction():
    c = Connector()
    pool = make_pool(c)
    assert c.count == 0 and pool.stats()["size"] == 0


def test_lifo_reuse():
    pool = make_pool(Connector(), size=3)
    a, b = pool.acquire(), pool.acquire()
    pool.release(a)
    pool.release(b)
    assert pool.acquire().connection is b.connection  # most recently returned first


def test_overflow_timeout_and_surplus_closed_when_idle():
    c = Connector()
    pool = make_pool(c, size=1, max_overflow=1, timeout=0.2)
    a, b = pool.acquire(), pool.acquire()
    with pytest.raises(PoolTimeoutError, match="pool_size=1"):
        pool.acquire()
    stats = pool.stats()
    assert stats["waits"] == 1 and stats["timeouts"] == 1 and stats["checked_out"] == 2
    pool.release(b)
    assert not b.connection.closed  # surplus stays while it may be needed again soon
    b.idle_since -= pool.surplus_idle + 1
    pool.release(a)  # the surplus sat idle too long: closed, the pool shrinks back to pool_size
    assert b.connection.closed and not a.connection.closed
    assert pool.stats()["size"] == 1 and pool.stats()["idle"] == 1


def acquire_in_thread(pool):
    """Start a thread calling ``pool.acquire()``; return it and its result list once it is waiting."""
    got = []
    t = threading.Thread(target=lambda: got.append(pool.acquire()))
    t.start()
    assert wait_until(lambda: pool.stats()["waits"] == 1)
    return t, got


def test_waiter_gets_released_connection():
    pool = make_pool(Connector(), size=1, max_overflow=0, timeout=60)
    a = pool.acquire()
    t, got = acquire_in_thread(pool)
    pool.release(a)
    t.join(60)
    assert got and got[0].connection is a.connection
    assert pool.stats()["waits"] == 1 and pool.stats()["wait_time"] > 0


def test_overflow_kept_while_others_wait():
    c = Connector()
    pool = make_pool(c, size=1, max_overflow=1, timeout=60)
    _a, b = pool.acquire(), pool.acquire()  # b is the overflow connection
    t, got = acquire_in_thread(pool)
    pool.release(b)  # someone is waiting: hand it over instead of closing it
    t.join(60)
    assert got and got[0].connection is b.connection and not b.connection.closed
    assert c.count == 2


def test_recycle_by_age():
    c = Connector()
    pool = make_pool(c, recycle=1)
    a = pool.acquire()
    pool.release(a)
    a.created -= 5
    b = pool.acquire()
    assert b.connection is not a.connection and a.connection.closed
    assert pool.stats()["recycled"] == 1


def test_recycle_off():
    pool = make_pool(Connector(), recycle=-1)
    a = pool.acquire()
    pool.release(a)
    a.created -= 10**6
    assert pool.acquire().connection is a.connection


def test_broken_connection_discarded():
    pool = make_pool(Connector())
    a = pool.acquire()
    pool.release(a, broken=True)
    assert a.connection.closed and pool.stats()["size"] == 0 and pool.stats()["discarded"] == 1


def test_logins_happen_outside_the_lock():
    # Every login waits until all 8 are in progress: that only completes if they run concurrently
    # (under the pool lock the first would wait alone and the barrier would break).
    c = Connector(barrier=threading.Barrier(8, timeout=60))
    pool = make_pool(c, size=8)
    results = []
    assert run_threads(lambda _: results.append(pool.acquire()), 8) == []
    assert len(results) == 8 and c.count == 8


def test_failed_login_frees_the_slot():
    def failing(**kw):
        raise pymssql.OperationalError((20009, b"Unable to connect: Adaptive Server is unavailable"))

    pool = ConnectionPool(parse_settings({}).connection, connect=failing, size=1, max_overflow=0, timeout=0.1)
    for _ in range(3):
        with pytest.raises(pymssql.OperationalError):
            pool.acquire()
    assert pool.stats()["size"] == 0 and pool.stats()["checked_out"] == 0


def test_is_broken_classification():
    assert is_broken(pymssql.OperationalError((20047, b"DBPROCESS is dead or not enabled")))
    assert is_broken(pymssql.OperationalError((20006, b"Write to the server failed")))
    assert is_broken(pymssql.InterfaceError((0, b"Adaptive Server connection failed (127.0.0.1)")))
    assert not is_broken(pymssql.OperationalError((1205, b"deadlock victim")))
    assert not is_broken(pymssql.IntegrityError((2627, b"Violation of PRIMARY KEY")))
    assert error_number(pymssql.OperationalError((1205, b"x"))) == 1205


# -- through pymssql to the stand-in ----------------------------------------------------------
def test_real_connections_are_autocommit_and_reused(standin):
    settings = parse_settings({"url": standin.url})
    pool = ConnectionPool(settings.connection, size=2)
    try:
        for _ in range(5):
            with pool.connection() as conn:
                cur = conn.cursor()
                cur.execute("SELECT @@TRANCOUNT")
                assert cur.fetchone()[0] == 0  # no implicit BEGIN TRANSACTION
        assert standin.stats()["logins"] == 1
    finally:
        pool.close()


def test_connection_dropped_by_server_is_discarded(standin):
    settings = parse_settings({"url": standin.url})
    pool = ConnectionPool(settings.connection, size=2)
    try:
        with pool.connection() as conn:
            conn.cursor().execute("SELECT 1")
        standin.faults.drop_next_request()
        with pytest.raises(drivers.ERRORS) as info:
            with pool.connection() as conn:
                conn.cursor().execute("SELECT 1")
        assert is_broken(info.value)
        assert pool.stats()["discarded"] == 1 and pool.stats()["size"] == 0
        with pool.connection() as conn:  # a fresh login
            cur = conn.cursor()
            cur.execute("SELECT 2")
            assert cur.fetchone()[0] == 2
        assert standin.stats()["logins"] == 2
    finally:
        pool.close()
