"""The engine mutex hands itself to waiters in arrival order (as SQL Server grants lock requests)."""

from __future__ import annotations

import threading
import time

import pytest

from beaker_mssql.testing.engine.fairlock import FairLock


def _wait_for_waiters(lock: FairLock, count: int) -> None:
    deadline = time.monotonic() + 5
    while len(lock._waiters) < count:
        assert time.monotonic() < deadline, "waiters never queued"
        time.sleep(0.001)


def test_waiters_get_the_lock_in_arrival_order() -> None:
    lock = FairLock()
    order: list[int] = []
    lock.acquire()
    threads = []
    for n in range(5):
        def worker(n: int = n) -> None:
            with lock:
                order.append(n)
                time.sleep(0.01)  # hold it a moment: the queue is still busy when main tries below
        thread = threading.Thread(target=worker)
        thread.start()
        _wait_for_waiters(lock, n + 1)  # queue them one by one, in a known order
        threads.append(thread)
    # Release hands the mutex straight to the first waiter: the releasing thread cannot barge back in.
    lock.release()
    assert not lock.acquire(blocking=False)
    for thread in threads:
        thread.join(5)
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
        assert cond.wait_for(lambda: ready, timeout=5)
    thread.join(5)
    assert not lock.locked()
