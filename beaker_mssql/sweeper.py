"""``auto_remove``: deleting expired rows in the background.

Expired rows are already invisible (every read filters on ``expires``); sweeping only keeps the
table small. One daemon thread per process and (connection, table), started on first use, so a
web app with many workers and many namespace managers still runs one sweeper per process.

* The first run comes after a random fraction of the interval and later runs are jittered by
  +-10 %, so workers started together do not sweep together.
* Each run takes ``sp_getapplock`` with ``@LockTimeout = 0``: across all processes at most one
  sweep runs at a time; the others skip that round.
* Rows go in ``DELETE TOP (auto_remove_batch_size)`` batches (default 1,000, below SQL Server's
  5,000-lock escalation threshold) until a batch comes back short.
* ``pre_remove_callback()`` runs first; if it raises, the sweep is skipped and the error reported.
  ``auto_remove_callback(error_or_None, deleted_count)`` is called exactly once per run.
* Several stores on one table (different options, same login and table) share the thread: it runs
  at the shortest of their ``auto_remove_interval``s with the smallest batch size, and every store's
  own ``pre_remove_callback`` and ``auto_remove_callback`` are called for every run.
* A failing run is logged and reported; the thread keeps going. ``store.close()`` and an atexit
  hook stop it.

Tests call :meth:`Sweeper.run_once` directly instead of waiting for the thread.

The store starts its sweeper (``auto_remove`` is a store option), so this module sits *below*
:mod:`beaker_mssql.store` and knows a store only as the :class:`SweptStore` protocol: the imports
stay one-way (config -> sql -> pool -> sweeper -> store -> namespace) without a hidden cycle.
"""

from __future__ import annotations

import atexit
import random
import threading
import time
from typing import Optional, Protocol

from beaker_mssql.config import Settings
from beaker_mssql.events import Events, logger

__all__ = ["SWEEP_LOCK", "Sweeper", "SweptStore", "stop_all", "sweeper_for"]


class _HeldLock(Protocol):
    def release(self) -> None: ...


class SweptStore(Protocol):
    """What a sweeper needs from :class:`~beaker_mssql.store.MSSQLStore`."""

    settings: Settings
    events: Events

    def acquire_applock(self, name: str, timeout_ms: int = 0) -> Optional[_HeldLock]: ...

    def destroy_expired(self, batch_size: Optional[int] = None) -> int: ...

SWEEP_LOCK = "auto_remove"

_registry: dict[object, Sweeper] = {}
_registry_lock = threading.Lock()


class Sweeper:
    """Periodically deletes expired rows through one of the stores registered with it."""

    def __init__(self, store: SweptStore, interval: Optional[float] = None, start: bool = True) -> None:
        self._stores: list[SweptStore] = [store]
        self._lock = threading.Lock()
        self.interval = float(interval if interval is not None else store.settings.auto_remove_interval)
        self._stop = threading.Event()
        # Set by stop() and by a store that shortens the interval: the sleeping thread reconsiders.
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.runs = 0
        if start:
            self.start()

    @property
    def store(self) -> Optional[SweptStore]:
        with self._lock:
            return self._stores[0] if self._stores else None

    def add_store(self, store: SweptStore) -> None:
        shorter = False
        with self._lock:
            if store not in self._stores:
                self._stores.append(store)
                shorter = float(store.settings.auto_remove_interval) < self.interval
                self.interval = min(self.interval, float(store.settings.auto_remove_interval))
        if shorter:
            self._wake.set()  # the thread may be in a long sleep chosen for the old interval

    def remove_store(self, store: SweptStore) -> None:
        """Forget ``store``; the last one leaving stops the thread."""
        with self._lock:
            if store in self._stores:
                self._stores.remove(store)
            empty = not self._stores
        if empty:
            with _registry_lock:
                for key, sweeper in list(_registry.items()):
                    if sweeper is self:
                        del _registry[key]
            self.stop()

    # -- the thread ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="beaker-mssql-sweeper", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread, waiting up to ``timeout`` seconds for a running sweep to finish."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        due = time.monotonic() + random.uniform(0, self.interval)
        while True:
            woken = self._wake.wait(max(0.0, due - time.monotonic()))
            if self._stop.is_set():
                return
            if woken:
                # A store with a shorter interval joined: run no later than that interval allows
                # (jittered like a first run, so workers that start together still spread out).
                self._wake.clear()
                due = min(due, time.monotonic() + random.uniform(0, self.interval))
                continue
            try:
                self.run_once()
            except Exception:  # run_once reports its own errors; never let the thread die
                logger.exception("beaker_mssql: sweeper run failed")
            due = time.monotonic() + self.interval * random.uniform(0.9, 1.1)

    # -- one sweep ----------------------------------------------------------------------------
    def run_once(self) -> Optional[int]:
        """Sweep now. Returns the rows deleted, or None when skipped (another process sweeps, or a
        ``pre_remove_callback`` refused)."""
        with self._lock:
            stores = list(self._stores)
        if not stores:
            return None
        store = stores[0]
        settings = store.settings
        self.runs += 1
        deleted = 0
        error: Optional[BaseException] = None
        skipped = False
        try:
            for each in stores:
                if each.settings.pre_remove_callback is not None:
                    each.settings.pre_remove_callback()
            lock = store.acquire_applock(SWEEP_LOCK, timeout_ms=0)
            if lock is None:
                skipped = True
                logger.debug("beaker_mssql: another process is sweeping %s; skipping", settings.table.quoted)
            else:
                try:
                    batch = min(each.settings.auto_remove_batch_size for each in stores)
                    deleted = store.destroy_expired(batch)
                finally:
                    lock.release()
                logger.info("beaker_mssql: removed %d expired rows from %s", deleted, settings.table.quoted)
        except Exception as exc:
            error = exc
            skipped = True
            logger.warning("beaker_mssql: expired-row sweep of %s failed: %s", settings.table.quoted, exc)
            store.events.emit("error", exc, "auto_remove")
        called: set[int] = set()
        for each in stores:
            callback = each.settings.auto_remove_callback
            if callback is None or id(callback) in called:
                continue
            called.add(id(callback))
            try:
                callback(error, deleted)
            except Exception:
                logger.exception("beaker_mssql: auto_remove_callback failed")
        return None if skipped else deleted


def sweeper_for(store: SweptStore, start: bool = True) -> Sweeper:
    """The process-wide sweeper of ``store``'s (connection, table), created (and started) on demand."""
    key = store.settings.pool_key
    with _registry_lock:
        sweeper = _registry.get(key)
        if sweeper is None:
            sweeper = _registry[key] = Sweeper(store, start=start)
            return sweeper
    sweeper.add_store(store)
    return sweeper


def stop_all() -> None:
    """Stop every sweeper (registered with atexit)."""
    with _registry_lock:
        sweepers = list(_registry.values())
        _registry.clear()
    for sweeper in sweepers:
        sweeper.stop(timeout=2.0)


atexit.register(stop_all)
