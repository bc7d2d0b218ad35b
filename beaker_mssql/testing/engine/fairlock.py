"""A first-come, first-served mutex for the engine.

Every statement runs under one engine-wide mutex (that is what makes each statement atomic). With a
plain ``threading.Lock`` a connection that runs statement after statement (a sweep's DELETE batches) can
take the mutex again before a waiting connection gets its turn, so a single-row read could wait out
several batches. SQL Server grants waiting lock requests in order; this lock does the same by handing
the mutex directly to the longest waiter on release. The price, measured with
benchmarks/standin_speed.py: about 20 % fewer upserts per second over 16 busy connections (every
hand-over is a thread switch); single-connection speed is unchanged.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any


class FairLock:
    """A FIFO mutex with the ``threading.Lock`` interface ``threading.Condition`` needs."""

    __slots__ = ("_guard", "_held", "_waiters")

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._held = False
        self._waiters: deque[threading.Lock] = deque()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        with self._guard:
            if not self._held and not self._waiters:
                self._held = True
                return True
            if not blocking:
                return False
            ticket = threading.Lock()
            ticket.acquire()
            self._waiters.append(ticket)
        if ticket.acquire(True, timeout):
            return True  # handed over by release(): we hold the mutex now
        with self._guard:
            try:
                self._waiters.remove(ticket)
            except ValueError:  # handed over just as we timed out: we hold it after all
                return True
            return False

    def release(self) -> None:
        with self._guard:
            if not self._held:
                raise RuntimeError("release of an unlocked FairLock")
            if self._waiters:
                self._waiters.popleft().release()  # stays held: ownership passes to that waiter
            else:
                self._held = False

    def locked(self) -> bool:
        return self._held

    __enter__ = acquire

    def __exit__(self, *exc: Any) -> None:
        self.release()
