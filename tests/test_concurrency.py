"""Many threads through SessionMiddleware at once, with the expired-row sweeper running alongside.

16 threads each run REQUESTS_PER_THREAD (200) WSGI requests (direct calls with cookies, as a browser
would): on their own sessions, and all on one shared session whose id none of them has saved yet (so the
first saves race to insert the same row). Afterwards every session holds its last written value, nothing
raised, no expired row survived the sweeper and the pool never had more than pool_size + overflow
connections. ``benchmarks/bench_throughput.py`` runs the same load against a stand-in in its own process
and reports throughput and pool waits (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any, Callable
from urllib.parse import parse_qs

import pytest
from beaker.middleware import SessionMiddleware
from beaker.session import Session
from helpers import CallLog, CreationLockPileUp, WSGIClient, wait_until

from beaker_mssql import namespace as ns_module
from beaker_mssql.namespace import close_all
from beaker_mssql.store import MSSQLStore

THREADS = 16
# The brief's full size: 16 x 200 takes ~45 s for the two sweeper tests on 2 cores (under the 60 s
# budget); BEAKER_MSSQL_CONCURRENCY_REQUESTS lowers it for quick local runs.
REQUESTS_PER_THREAD = int(os.environ.get("BEAKER_MSSQL_CONCURRENCY_REQUESTS", "200"))
POOL_SIZE = 4
POOL_OVERFLOW = 4
EXPIRED_ROWS = 1500


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    close_all()
    yield
    close_all()


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    session = environ["beaker.session"]
    path = environ["PATH_INFO"]
    if path == "/write":
        session["value"] = parse_qs(environ["QUERY_STRING"])["v"][0]
        session["writes"] = int(session.get("writes", 0)) + 1
        session.save()
        body = "ok"
    else:
        body = str(session.get("value"))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode("utf-8")]


class Monitor:
    """Samples the pool(s) while threads run; on the stand-in, also checks the server's side.

    The pool's own count (connections open + logins in progress) is sampled for its maximum. The server
    cannot be sampled the same way (a closed overflow connection disappears there a moment after the
    client closed it), so on the stand-in the monitor instead checks that every login the server saw
    came from these pools, and that once the threads stop the server holds exactly the pools' idle
    connections.
    """

    def __init__(self, server: Any) -> None:
        self.server = server
        self.standin = bool(getattr(server, "is_standin", False))
        self.max_pool = 0
        self.max_checked_out = 0
        self.baseline = 0
        self.server_logins = 0
        self.pool_connects = 0
        self.server_matches_pool = True
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def sample(self) -> None:
        for pool in list(ns_module._pools.values()):
            stats = pool.stats()
            self.max_pool = max(self.max_pool, int(stats["size"]))
            self.max_checked_out = max(self.max_checked_out, int(stats["checked_out"]))

    def run(self) -> None:
        while not self.stop.wait(0.005):
            self.sample()

    def __enter__(self) -> Monitor:
        if self.standin:
            self.server.reset_stats()
            self.baseline = int(self.server.stats()["connections_open"])
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)
        self.sample()
        pools = [p.stats() for p in ns_module._pools.values()]
        self.pool_connects = sum(int(p["connects"]) for p in pools)
        if self.standin:
            self.server_logins = int(self.server.stats()["logins"])
            held = sum(int(p["size"]) for p in pools)
            # Nothing signals the server-side close: poll, with a deadline only a hang reaches.
            self.server_matches_pool = wait_until(
                lambda: int(self.server.stats()["connections_open"]) <= self.baseline + held
            )
            self.detail = (
                f"baseline {self.baseline}, pool holds {held}, server has "
                f"{self.server.stats()['connections_open']} logged in"
            )

    def check(self, bound: int) -> None:
        assert 0 < self.max_pool <= bound, f"pool held {self.max_pool} connections, bound {bound}"
        assert self.max_checked_out <= bound
        if self.standin:
            assert self.server_logins == self.pool_connects, "the server saw logins from outside the pool"
            assert self.server_matches_pool, (
                f"the server holds other connections than the pool's: {self.detail}"
            )


SweepReports = CallLog  # the auto_remove_callback's (error, deleted) reports


def fill_expired(server: Any, table: str, count: int) -> None:
    values = [f"(N'expired-{i:06d}', N'{{}}', DATEADD(second, -600, GETUTCDATE()))" for i in range(count)]
    for start in range(0, count, 500):
        server.execute(
            f"INSERT INTO {table} ([sid], [session], [expires]) "
            f"VALUES {', '.join(values[start : start + 500])}"
        )


def count(server: Any, sql: str) -> int:
    return int(server.execute(sql)[0][0])


def run_threads(target: Callable[[int], None]) -> list[BaseException]:
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def wrapper(n: int) -> None:
        try:
            start.wait(30)
            target(n)
        except BaseException as exc:  # every failure is collected and reported
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=wrapper, args=(n,), name=f"client-{n}") for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
        assert not t.is_alive(), f"{t.name} is stuck"
    return errors


@pytest.fixture
def options(mssql_server: Any, mssql_table: str) -> dict[str, Any]:
    return {
        "type": "ext:mssql",
        "url": mssql_server.url,
        "table": mssql_table,
        "data_serializer": "json",
        "pool_size": POOL_SIZE,
        "pool_max_overflow": POOL_OVERFLOW,
        "pool_timeout": 60,
    }


def sweeping(options: dict[str, Any], reports: SweepReports) -> dict[str, Any]:
    return dict(
        options,
        auto_remove=True,
        auto_remove_interval=0.2,
        auto_remove_batch_size=200,
        auto_remove_callback=reports,
    )


def test_distinct_sessions_under_concurrency_with_sweeper(
    mssql_server: Any, mssql_table: str, options: dict[str, Any]
) -> None:
    fill_expired(mssql_server, mssql_table, EXPIRED_ROWS)
    reports = SweepReports()
    opts = sweeping(options, reports)
    wsgi = SessionMiddleware(app, **opts)
    sids: dict[int, str] = {}
    mismatches: list[str] = []

    def client(n: int) -> None:
        c = WSGIClient(wsgi)
        last = None
        for i in range(REQUESTS_PER_THREAD):
            if i == REQUESTS_PER_THREAD // 2:  # a sweep runs while every thread is still at work
                assert reports.wait_for(lambda calls: len(calls) >= 1), "the sweeper never ran"
            if i % 2 == 0:
                last = f"t{n}-r{i}"
                assert c.get(f"/write?v={last}") == "ok"
            else:
                seen = c.get("/read")
                if seen != last:
                    mismatches.append(f"thread {n} request {i}: read {seen!r}, wrote {last!r}")
        sids[n] = c.sid

    with Monitor(mssql_server) as monitor:
        errors = run_threads(client)
    assert not errors, f"{len(errors)} thread(s) failed; first: {errors[0]!r}"
    assert not mismatches, mismatches[:5]
    assert len(set(sids.values())) == THREADS

    # Every session is present with its last written value and its write count.
    writes = (REQUESTS_PER_THREAD + 1) // 2
    last_i = (writes - 1) * 2
    load = {k: v for k, v in opts.items() if k != "auto_remove"}
    for n, sid in sids.items():
        session = Session({}, id=sid, use_cookies=False, **load)
        assert not session.is_new, f"session of thread {n} is missing"
        assert session["value"] == f"t{n}-r{last_i}"
        assert session["writes"] == writes

    # The pool bound held (and, on the stand-in, the server saw only the pool's connections).
    monitor.check(POOL_SIZE + POOL_OVERFLOW)

    # The sweeper ran alongside without errors; finish its work and check it deleted only expired rows.
    with reports.lock:
        calls = list(reports.calls)
    assert calls, "the sweeper never ran while the threads did"
    assert all(error is None for error, _ in calls), [e for e, _ in calls if e is not None][:3]
    with MSSQLStore(url=mssql_server.url, table=mssql_table) as store:
        store.destroy_expired()
    assert count(mssql_server, f"SELECT COUNT(*) FROM {mssql_table} WHERE [expires] <= GETUTCDATE()") == 0
    assert count(mssql_server, f"SELECT COUNT(*) FROM {mssql_table}") == THREADS


def test_one_shared_session_under_concurrency_with_sweeper(
    mssql_server: Any, mssql_table: str, options: dict[str, Any]
) -> None:
    """All threads use one session id that is not in the table yet: the first saves race to insert it."""
    fill_expired(mssql_server, mssql_table, EXPIRED_ROWS // 3)
    reports = SweepReports()
    opts = sweeping(options, reports)
    wsgi = SessionMiddleware(app, **opts)
    sid = uuid.uuid4().hex
    written: set[str] = set()
    lock = threading.Lock()

    def client(n: int) -> None:
        c = WSGIClient(wsgi, cookie=f"beaker.session.id={sid}")
        for i in range(REQUESTS_PER_THREAD):
            if i % 2 == 0:
                value = f"t{n}-r{i}"
                with lock:
                    written.add(value)
                assert c.get(f"/write?v={value}") == "ok"
            else:
                seen = c.get("/read")
                assert seen == "None" or seen in written, seen
        assert c.sid == sid

    with Monitor(mssql_server) as monitor:
        errors = run_threads(client)
    assert not errors, f"{len(errors)} thread(s) failed; first: {errors[0]!r}"

    rows = mssql_server.execute(f"SELECT COUNT(*) FROM {mssql_table} WHERE [sid] = N'{sid}'")
    assert rows == [(1,)], "the shared session is not exactly one row"
    load = {k: v for k, v in opts.items() if k != "auto_remove"}
    session = Session({}, id=sid, use_cookies=False, **load)
    assert session["value"] in written  # last writer wins, and it is one of the written values
    assert 1 <= session["writes"] <= THREADS * ((REQUESTS_PER_THREAD + 1) // 2)
    monitor.check(POOL_SIZE + POOL_OVERFLOW)
    with reports.lock:
        assert all(error is None for error, _ in reports.calls)


def test_pool_smaller_than_thread_count_waits_instead_of_failing(
    mssql_server: Any, mssql_table: str, options: dict[str, Any]
) -> None:
    """pool_size 2 and no overflow for 16 threads: requests queue for a connection; none fails."""
    opts = dict(options, pool_size=2, pool_max_overflow=0)
    wsgi = SessionMiddleware(app, **opts)

    def client(n: int) -> None:
        c = WSGIClient(wsgi)
        for i in range(6):
            assert c.get(f"/write?v={n}-{i}") == "ok"
            assert c.get("/read") == f"{n}-{i}"

    with Monitor(mssql_server) as monitor:
        errors = run_threads(client)
    assert not errors, errors[:3]
    monitor.check(2)
    pools = list(ns_module._pools.values())
    assert pools and all(p.stats()["timeouts"] == 0 for p in pools)
    assert any(p.stats()["waits"] > 0 for p in pools), "16 threads on 2 connections never waited?"


def test_pool_keeps_connections_under_sustained_load(
    mssql_server: Any, mssql_table: str, options: dict[str, Any]
) -> None:
    """16 threads on pool_size 4 + overflow 4: once warm, requests reuse connections instead of logging in.

    A login costs several round trips; the target is no login per request after warm-up. The pool may
    close surplus connections when load drops, but not while every connection is in demand.
    """
    wsgi = SessionMiddleware(app, **options)
    per_thread = 30

    def client(n: int) -> None:
        c = WSGIClient(wsgi)
        for i in range(per_thread):
            assert c.get(f"/write?v={n}-{i}") == "ok"

    with Monitor(mssql_server) as monitor:
        errors = run_threads(client)
    assert not errors, errors[:3]
    monitor.check(POOL_SIZE + POOL_OVERFLOW)
    requests = THREADS * per_thread
    assert monitor.pool_connects <= 2 * (POOL_SIZE + POOL_OVERFLOW), (
        f"{monitor.pool_connects} logins for {requests} requests: overflow connections are closed on "
        "release while other threads still need them"
    )


def test_cache_value_is_created_once_under_concurrency(
    mssql_server: Any, mssql_table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """16 threads ask a Beaker cache for the same missing key: the creation lock (sp_getapplock, so it
    also holds across processes) lets exactly one thread create it while the 15 others are known to
    wait for that lock (7 blocked on the server's app lock, 8 for a pool connection: the threads
    outnumber the pool); every thread gets that value, and nothing deadlocks."""
    from beaker.cache import Cache

    cache = Cache(
        "dogpile",
        type="ext:mssql",
        url=mssql_server.url,
        table=mssql_table,
        pool_size=POOL_SIZE,
        pool_max_overflow=POOL_OVERFLOW,
        pool_timeout=60,
        serializer="json",
    )
    store = cache.namespace.store
    # The creator holds one connection; each waiter on the server's lock holds another.
    pile = CreationLockPileUp(store, THREADS, mssql_server, blocked_on_server=POOL_SIZE + POOL_OVERFLOW - 1)
    monkeypatch.setattr(store, "acquire_applock", pile.acquire_applock)
    results: dict[int, Any] = {}

    def create() -> dict[str, Any]:
        return {"made": pile.wait_for_pile_up()}

    def client(n: int) -> None:
        results[n] = cache.get_value("expensive", createfunc=create, expiretime=600)

    errors = run_threads(client)
    assert not errors, errors[:3]
    assert pile.created == 1, f"createfunc ran {pile.created} times"
    assert all(value == {"made": 1} for value in results.values()) and len(results) == THREADS
