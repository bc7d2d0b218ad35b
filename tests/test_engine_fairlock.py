"""The engine mutex hands itself to waiters in arrival order (as SQL Server grants lock requests)."""

from __future__ import annotations

import threading

import pytest
from helpers import wait_until

from beaker_mssql.testing.engine.fairlock import FairLock


def _wait_for_waiters(lock: FairLock, count: int) -> None:
    assert wait_until(lambda: len(lock._waiters) >= count), "waiters never queued"


def test_waiters_get_the_lock_in_arrival_order() -> None:
    lock = FairLock()
    order: list[int] = []
    tried = threading.Event()
    lock.acquire()
    threads = []
    for n in range(5):
        def worker(n: int = n) -> None:
            with lock:
                order.append(n)
                if n == 0:  # the first waiter holds it until main has tried to barge back in
                    assert tried.wait(60)
        thread = threading.Thread(target=worker)
        thread.start()
        _wait_for_waiters(lock, n + 1)  # queue them one by one, in a known order
        threads.append(thread)
    # Release hands the mutex straight to the first waiter: the releasing thread cannot barge back in.
    lock.release()
    barged = lock.acquire(blocking=False)
    tried.set()
    if barged:
        lock.release()
    assert not barged, "the releasing thread barged in ahead of the queued waiters"
    for thread in threads:
        thread.join(60)
    assert order == [0, 1, 2, 3, 4]


def test_non_blocking_and_timeout_acquire() -> None:
    lock = FairLock()
    assert lock.acquire(blocking=False)
    assert not lock.acquire(blocking=False)
    assert not lock.acquire(timeout=0.05)
    assert lock._waiters == type(lock._waiters)()  # a timed-out waiter leaves the queue
    lock.release()
    assert not lock.locked()
    with pytest.raises(RuntimeError):
        lock.release()


def test_works_under_threading_condition() -> None:
    lock = FairLock()
    cond = threading.Condition(lock)  # type: ignore[arg-type]
    ready: list[bool] = []

    def notifier() -> None:
        with cond:
            ready.append(True)
            cond.notify_all()

    with cond:
        thread = threading.Thread(target=notifier)
        thread.start()
        assert cond.wait_for(lambda: ready, timeout=60)
    thread.join(60)
    assert not lock.locked()
