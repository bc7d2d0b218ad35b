"""The stand-in's clock: what GETUTCDATE(), GETDATE() and SYSUTCDATETIME() return.

Tests move it instead of sleeping. It runs with real time from wherever it was last set, so
durations measured by the server still make sense; ``freeze()`` stops it for exact assertions.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Optional


def host_utc_offset() -> timedelta:
    """The host's current offset from UTC (what GETDATE() - GETUTCDATE() is on a real server)."""
    offset = datetime.now(timezone.utc).astimezone().utcoffset()
    return offset if offset is not None else timedelta(0)


class Clock:
    """A settable, advanceable UTC clock with a local-time offset. Thread-safe."""

    def __init__(self, utc_offset: Optional[timedelta] = None) -> None:
        self._lock = threading.Lock()
        self._base_utc = datetime.now(timezone.utc).replace(tzinfo=None)
        self._base_mono = time.monotonic()
        self._frozen = False
        self._utc_offset = host_utc_offset() if utc_offset is None else utc_offset

    def utcnow(self) -> datetime:
        """Naive UTC datetime: GETUTCDATE() / SYSUTCDATETIME()."""
        with self._lock:
            if self._frozen:
                return self._base_utc
            return self._base_utc + timedelta(seconds=time.monotonic() - self._base_mono)

    def now(self) -> datetime:
        """Naive local datetime: GETDATE(), i.e. utcnow() + utc_offset."""
        return self.utcnow() + self.utc_offset

    @property
    def utc_offset(self) -> timedelta:
        with self._lock:
            return self._utc_offset

    @utc_offset.setter
    def utc_offset(self, value: timedelta) -> None:
        if not isinstance(value, timedelta):
            raise TypeError(f"utc_offset must be a datetime.timedelta, not {type(value).__name__}")
        with self._lock:
            self._utc_offset = value

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (naive UTC, or aware: converted to UTC)."""
        if not isinstance(when, datetime):
            raise TypeError(f"clock.set() needs a datetime, not {type(when).__name__}")
        if when.tzinfo is not None:
            when = when.astimezone(timezone.utc).replace(tzinfo=None)
        with self._lock:
            self._base_utc = when
            self._base_mono = time.monotonic()

    def advance(self, seconds: float) -> None:
        """Move the clock forward (or back, with a negative number) by ``seconds``."""
        delta = timedelta(seconds=float(seconds))
        with self._lock:
            self._base_utc += delta

    def freeze(self) -> None:
        """Stop the clock where it is; set() and advance() still move it."""
        with self._lock:
            if not self._frozen:
                self._base_utc = self._base_utc + timedelta(seconds=time.monotonic() - self._base_mono)
                self._frozen = True

    def unfreeze(self) -> None:
        """Let the clock run with real time again, from where it stands."""
        with self._lock:
            if self._frozen:
                self._base_mono = time.monotonic()
                self._frozen = False

    @property
    def frozen(self) -> bool:
        return self._frozen
