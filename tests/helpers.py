"""Small helpers shared by the test modules (fixtures live in conftest.py).

Kept in one place so every concurrency test collects its threads' exceptions the same way (an
exception in a bare ``threading.Thread`` is only printed, and the test would pass) and every
"wait until the other thread got there" polls the same way instead of sleeping a guessed time.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any, Callable, Optional
from wsgiref.util import setup_testing_defaults


def new_sid() -> str:
    """A fresh, valid session id (32 hex digits, like Beaker's)."""
    return uuid.uuid4().hex


def wait_until(predicate: Callable[[], object], timeout: float = 60.0) -> bool:
    """Poll ``predicate`` until it is true; False if ``timeout`` seconds passed first.

    Only for states nothing signals (another thread blocked inside the server, a pool's wait
    counter): a wait the test can hook (a callback) uses :class:`CallLog` instead. The timeout is how
    long a broken test hangs before it fails, never a measurement: it is generous because other test
    runs share these 2-core machines, and a passing test returns as soon as the predicate holds.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class CallLog:
    """A callback (``auto_remove_callback``, ``on_error``...) that records its calls, so a test can
    wait for the calls it needs instead of sleeping or polling the database.

    ``wait_for(predicate)`` wakes on every call and returns once ``predicate(calls)`` holds (False
    after ``timeout`` seconds: a hang fails the test instead of stalling it). ``lock`` guards ``calls``.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.lock = threading.Condition()

    def __call__(self, *args: Any) -> None:
        with self.lock:
            self.calls.append(args)
            self.lock.notify_all()

    def __hash__(self) -> int:  # store options are registry keys: keep the recorder hashable
        return id(self)

    def snapshot(self) -> list[tuple[Any, ...]]:
        with self.lock:
            return list(self.calls)

    def wait_for(self, predicate: Callable[[list[tuple[Any, ...]]], object], timeout: float = 60.0) -> bool:
        with self.lock:
            return bool(self.lock.wait_for(lambda: predicate(self.calls), timeout))


def run_threads(target: Callable[[int], object], count: int, timeout: float = 60.0) -> list[BaseException]:
    """Run ``target(0) ... target(count - 1)`` in ``count`` threads at once and join them all.

    Returns what the threads raised (a test asserts it is ``[]``), plus a ``TimeoutError`` for each
    thread still running after ``timeout`` seconds, so a hang fails the test instead of stalling it.
    """
    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:  # reported to the caller
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        if thread.is_alive():
            errors.append(TimeoutError(f"{thread.name} still running after {timeout} s"))
    return errors


class WSGIClient:
    """A cookie-keeping WSGI caller (what a browser does), without webtest's error wrapping.

    Direct calls keep the concurrency and fault tests cheap and let a backend exception reach the
    test as itself; any status but 200 fails the request.
    """

    def __init__(self, app: Callable[..., Any], cookie: Optional[str] = None) -> None:
        self.app = app
        self.cookie = cookie

    def get(self, path: str) -> str:
        environ: dict[str, Any] = {}
        setup_testing_defaults(environ)
        environ["PATH_INFO"], _, environ["QUERY_STRING"] = path.partition("?")
        if self.cookie:
            environ["HTTP_COOKIE"] = self.cookie
        headers: list[tuple[str, str]] = []

        def start_response(status: str, hdrs: list[tuple[str, str]], exc_info: Any = None) -> None:
            assert status == "200 OK", status
            headers.extend(hdrs)

        body = b"".join(self.app(environ, start_response)).decode("utf-8")
        for name, value in headers:
            if name.lower() == "set-cookie":
                self.cookie = value.split(";", 1)[0]
        return body

    @property
    def sid(self) -> str:
        """The session id in the cookie the client holds."""
        assert self.cookie
        return self.cookie.split("=", 1)[1]


def signed_cookie_sid(app: Any, cookie: str = "beaker.session.id") -> str:
    """The session id inside a webtest app's signed Beaker cookie (40 hex characters of HMAC, then the id)."""
    return str(app.cookies[cookie]).strip('"')[40:]


class CreationLockPileUp:
    """Makes a dogpile test's contention certain instead of likely (no sleeping createfunc).

    Wraps ``store.acquire_applock`` for Beaker's creation locks (``create:...``, waiting calls only):
    each of ``threads`` callers first waits at a barrier, so every thread has found the value missing
    before any takes the lock (none can arrive after the value exists and skip the lock), then counts
    itself as a waiter until the real ``sp_getapplock`` call returns. The createfunc calls
    :meth:`wait_for_pile_up`: it returns once the other ``threads - 1`` are inside the lock call and, on
    the stand-in, ``blocked_on_server`` of them are blocked on the server's lock (the others wait for a
    pool connection inside the same call). A lock that let a waiter through would show up as a second
    createfunc call, which ends the wait as well, so the test fails on its assertions instead of hanging.
    """

    def __init__(self, store: Any, threads: int, server: Any = None, blocked_on_server: int = 0,
                 timeout: float = 60.0) -> None:
        self.threads = threads
        self.server = server if getattr(server, "is_standin", False) else None
        self.blocked_on_server = blocked_on_server
        self.timeout = timeout
        self.barrier = threading.Barrier(threads, timeout=timeout)
        self.cond = threading.Condition()
        self.waiting = 0  # threads inside a waiting acquire_applock("create:...") call
        self.created = 0  # createfunc calls
        self.original = store.acquire_applock

    def acquire_applock(self, name: str, timeout_ms: int = 0) -> Any:
        """Stands in for ``store.acquire_applock`` (the test installs it with monkeypatch)."""
        if not name.startswith("create:") or timeout_ms == 0:
            return self.original(name, timeout_ms=timeout_ms)
        self.barrier.wait()
        with self.cond:
            self.waiting += 1
            self.cond.notify_all()
        try:
            return self.original(name, timeout_ms=timeout_ms)
        finally:
            with self.cond:
                self.waiting -= 1
                self.cond.notify_all()

    def wait_for_pile_up(self) -> int:
        """Called by the createfunc (holding the lock): returns this call's number (1 for the first)."""
        with self.cond:
            self.created += 1
            number = self.created
            self.cond.notify_all()
            piled = self.cond.wait_for(
                lambda: self.waiting == self.threads - 1 or self.created > 1, self.timeout)
        assert piled, f"only {self.waiting} of {self.threads - 1} threads reached the creation lock"
        if number == 1 and self.created == 1 and self.server is not None:
            locks = self.server.engine.locks
            assert wait_until(lambda: len(locks.waits) == self.blocked_on_server, self.timeout), (
                f"{len(locks.waits)} sessions blocked on the server, expected {self.blocked_on_server}")
        return number
