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
