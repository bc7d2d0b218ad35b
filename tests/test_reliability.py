"""Reliability under faults and interrupts (issue 15), each case reproduced with a real fault.

Faults are real: the stand-in runs a request to its commit and then cuts (or holds) the reply; a
``BaseException`` is raised inside the driver's wait for a reply (pymssql's wait callback, python-tds's
packet read) while a request is on the wire; two stores share one pool. After every fault,
:func:`assert_clean_connection` checks the next connection the pool hands out: no open transaction, the
session options every fresh connection has, no app lock held.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pymssql
import pytest
from beaker.cache import CacheManager
from beaker.middleware import SessionMiddleware
from beaker.session import Session
from helpers import WSGIClient, run_threads, wait_until
from standin_raw import RawClient, is_attention_ack

from beaker_mssql import MSSQLStore, config
from beaker_mssql.errors import WriteOutcomeUnknownError
from beaker_mssql.integrations import end_session
from beaker_mssql.store import Loaded, SaveResult
from beaker_mssql.sweeper import sweeper_for
from beaker_mssql.testing import SQLServerStandIn

pytestmark = [pytest.mark.standin_only, pytest.mark.filterwarnings("ignore::beaker.exceptions.BeakerWarning")]

STATE_SQL = "SELECT @@TRANCOUNT, @@OPTIONS, APPLOCK_MODE('public', %s, 'Session')"


def baseline_state(store: MSSQLStore) -> tuple[Any, ...]:
    """(@@TRANCOUNT, @@OPTIONS) of a brand-new connection to the same server."""
    conn = pymssql.connect(**store.settings.connection.connect_kwargs())
    try:
        cur = conn.cursor()
        cur.execute("SELECT @@TRANCOUNT, @@OPTIONS")
        return tuple(cur.fetchone())
    finally:
        conn.close()


def assert_clean_connection(store: MSSQLStore, *lock_names: str) -> None:
    """The next pooled connection has no open transaction, fresh-connection options and no app lock."""
    expected = baseline_state(store)
    lease = store.pool.acquire()
    try:
        cur = lease.connection.cursor()
        for name in lock_names or ("none",):
            cur.execute(STATE_SQL, (store._lock_resource(name),))
            trancount, options, lock = cur.fetchone()
            assert (trancount, options) == expected, "a previous statement left session state behind"
            assert lock == "NoLock", f"the pooled connection still holds app lock {name!r}"
    finally:
        lease.release()
    assert store.pool.stats()["checked_out"] == 0


@pytest.fixture
def store(standin: SQLServerStandIn, mssql_table: str) -> Iterator[MSSQLStore]:
    with MSSQLStore(url=standin.url, table=mssql_table, retries=2, query_timeout=10) as made:
        yield made


def _save_in_thread(
    store: MSSQLStore, sid: str, data: str, loaded: Loaded
) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(store.save(sid, data, loaded))
        except BaseException as exc:  # reported to the test
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


# -- 1. a save whose reply was lost never undoes a later write --------------------------------------
def test_save_committed_but_reply_lost_does_not_undo_a_logout(standin, store):
    store.set("s1", "before-logout")
    loaded = store.load("s1")
    release = threading.Event()
    ran = standin.faults.cut_reply(pattern="HASHBYTES", hold=release)
    thread, outcome = _save_in_thread(store, "s1", "tab-1-data", loaded)
    assert ran.wait(60)  # tab 1's save has committed; its reply is held
    assert store.destroy("s1")  # tab 2 logs out
    release.set()  # tab 1's reply is cut: its driver sees a broken connection
    thread.join(30)
    assert outcome == [SaveResult.DELETED_MEANWHILE]
    assert store.get("s1") is None
    assert_clean_connection(store)


def test_save_whose_reply_was_lost_is_not_sent_twice(standin, store):
    store.set("s2", "v0")
    loaded = store.load("s2")
    standin.faults.cut_reply(pattern="HASHBYTES")
    assert store.save("s2", "v1", loaded) == SaveResult.SAVED  # re-read: it had committed
    assert store.get("s2") == "v1"
    assert_clean_connection(store)


def test_save_retry_never_overwrites_a_newer_save(standin, mssql_url, mssql_table):
    """Tab 1's save commits, its reply is held; tab 2 loads that and saves a newer value of the same
    key; tab 1's retry must keep tab 2's value (re-applying its own value would roll tab 2 back)."""
    sid = uuid.uuid4().hex
    params = {"type": "ext:mssql", "url": mssql_url, "table": mssql_table, "data_serializer": "json",
              "retries": 2}
    seed = Session({}, id=sid, use_cookies=False, **params)
    seed["k"] = "v0"
    seed.save()
    tab1 = Session({}, id=sid, use_cookies=False, **params)
    tab1["k"] = "tab1"
    release = threading.Event()
    ran = standin.faults.cut_reply(pattern="HASHBYTES", hold=release)
    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: _guard(errors, tab1.save))
    thread.start()
    assert ran.wait(60)
    tab2 = Session({}, id=sid, use_cookies=False, **params)
    assert tab2["k"] == "tab1"  # tab 1's save is committed
    tab2["k"] = "tab2"
    tab2.save()
    release.set()
    thread.join(30)
    assert errors == []
    assert Session({}, id=sid, use_cookies=False, **params)["k"] == "tab2"


def _guard(errors: list[BaseException], call: Any) -> None:
    try:
        call()
    except BaseException as exc:
        errors.append(exc)


def test_destroy_whose_reply_was_lost_reports_the_row_deleted(standin, store):
    store.set("s3", "v")
    standin.faults.cut_reply(pattern="DELETE")
    assert store.destroy("s3") is True  # the retry finds nothing, but the first attempt deleted it
    assert store.get("s3") is None
    assert_clean_connection(store)


def test_unconditional_set_with_lost_reply_is_not_resent(standin, store):
    store.set("s4", "old")
    standin.faults.cut_reply(pattern="INSERT")
    store.set("s4", "new")  # committed; the reply is lost; the read-back shows it: success
    assert store.get("s4") == "new"
    standin.faults.drop_next_request()  # never ran
    with pytest.raises(WriteOutcomeUnknownError, match="not sent again"):
        store.set("s4", "newer")
    assert store.get("s4") == "new"
    assert_clean_connection(store)


# -- 2. an interrupt while a lock request is in flight ----------------------------------------------
class Interrupt(BaseException):
    """Stands in for gevent.Timeout / KeyboardInterrupt / an async exception."""


@pytest.fixture
def interrupt_next_wait(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Set the returned event to raise Interrupt, once, while the driver waits for the server's reply:
    inside pymssql's wait callback, or (driver = pytds) where python-tds reads a reply packet."""
    arm = threading.Event()
    if config.DEFAULT_DRIVER == "pytds":
        from pytds.tds_reader import _TdsReader

        read_packet = _TdsReader._read_packet

        def interrupted_read(reader: Any) -> None:
            if arm.is_set():
                arm.clear()
                raise Interrupt()
            read_packet(reader)

        monkeypatch.setattr(_TdsReader, "_read_packet", interrupted_read)
        yield arm
        return

    def callback(fileno: int) -> None:
        if arm.is_set():
            arm.clear()
            raise Interrupt()
        import select

        select.select([fileno], [], [])

    pymssql.set_wait_callback(callback)
    try:
        yield arm
    finally:
        pymssql.set_wait_callback(None)


def test_interrupted_applock_request_leaks_no_lock(standin, store, mssql_table, interrupt_next_wait):
    other = MSSQLStore(url=standin.url, table=mssql_table)
    try:
        store.set("warm", "v")  # logged in: the interrupt hits the lock request, not the login
        before = store.pool.stats()["discarded"]
        interrupt_next_wait.set()
        with pytest.raises(Interrupt):
            store.acquire_applock("creation", timeout_ms=0)
        assert store.pool.stats()["discarded"] == before + 1  # closed, not pooled
        assert store.pool.stats()["checked_out"] == 0 and store.pool.pinned() is None
        lock = other.acquire_applock("creation", timeout_ms=5000)  # the server dropped it with the session
        assert lock is not None
        lock.release()
        assert_clean_connection(store, "creation")
    finally:
        other.close()


def test_interrupted_query_discards_the_connection(standin, store, interrupt_next_wait):
    store.set("q", "v")
    interrupt_next_wait.set()
    with pytest.raises(Interrupt):
        store.get("q")
    assert store.pool.stats()["checked_out"] == 0
    assert store.get("q") == "v"
    assert_clean_connection(store)


# -- 3. no session state left behind after any failure ----------------------------------------------
@pytest.mark.parametrize("number", [1205, 1222, 2627, 8152])
def test_failed_save_leaves_no_session_state(standin, store, number):
    store.set("f", "v")
    standin.faults.raise_error(number, times=10, pattern="INSERT|HASHBYTES")
    with pytest.raises(Exception):  # noqa: B017 - each number fails in its own way; the point is after
        store.set("f", "w")
    standin.faults.clear()
    assert_clean_connection(store)
    assert store.destroy("f") and store.destroy_expired() == 0  # rowcounts still read right


def test_case_conflict_leaves_no_session_state(standin, store):
    store.set("CaseID", "a")
    with pytest.raises(Exception, match="differs only by letter case"):
        store.set("caseid", "b")
    assert_clean_connection(store)
    store.set("other", "x")
    assert store.clear() == 2  # a NOCOUNT left on would make this read 0


# -- 4. two stores on one pool while a creation lock is held ----------------------------------------
def test_stores_sharing_a_pool_share_the_threads_pinned_connection(standin, mssql_table):
    a = MSSQLStore(url=standin.url, table=mssql_table, pool_size=2, pool_max_overflow=0, pool_timeout=2)
    b = MSSQLStore.from_settings(
        MSSQLStore(url=standin.url, table=mssql_table, ttl=60).settings, pool=a.pool)
    barrier = threading.Barrier(2, timeout=10)
    try:
        def request(n: int) -> None:
            lock = a.acquire_applock(f"create:{n}", timeout_ms=5000)
            assert lock is not None
            try:
                barrier.wait()  # both connections are pinned now
                b.set(f"row{n}", "v")  # another store, same pool: must use this thread's connection
                assert b.get(f"row{n}") == "v"
            finally:
                lock.release()

        assert run_threads(request, 2) == []
        assert a.pool.stats()["timeouts"] == 0
    finally:
        b.close()
        a.close()


# -- 5. an exception at the wrong moment never leaks a pool slot ------------------------------------
def test_exception_right_after_acquire_returns_frees_the_slot(standin, mssql_table, monkeypatch):
    store = MSSQLStore(url=standin.url, table=mssql_table, pool_size=1, pool_max_overflow=0, pool_timeout=2)
    try:
        store.set("p", "v")
        real = store.pool.acquire
        fired = []

        def acquire_then_interrupt() -> Any:
            lease = real()
            if not fired:
                fired.append(True)
                raise Interrupt()  # as if delivered between acquire() returning and the caller's try
            return lease

        monkeypatch.setattr(store.pool, "acquire", acquire_then_interrupt)
        with pytest.raises(Interrupt):
            store.get("p")
        assert store.get("p") == "v"  # the only slot came back
        assert store.pool.stats()["reclaimed"] == 1
    finally:
        store.close()


def test_exception_on_entry_to_release_frees_the_slot(standin, mssql_table, monkeypatch):
    from beaker_mssql.pool import Lease

    store = MSSQLStore(url=standin.url, table=mssql_table, pool_size=1, pool_max_overflow=0, pool_timeout=2)
    try:
        store.set("p", "v")
        real = Lease.release
        fired = []

        def interrupted_release(self: Lease, broken: bool = False) -> None:
            if not fired:
                fired.append(True)
                raise Interrupt()
            real(self, broken)

        monkeypatch.setattr(Lease, "release", interrupted_release)
        with pytest.raises(Interrupt):
            store.get("p")
        monkeypatch.setattr(Lease, "release", real)
        assert store.get("p") == "v"
        assert store.pool.stats()["checked_out"] == 0
    finally:
        store.close()


# -- 6. a session's removal touches its own row only ------------------------------------------------
def test_logging_out_a_chosen_session_id_keeps_the_cache_namespace(standin, mssql_table):
    cache = CacheManager(type="ext:mssql", url=standin.url, table=mssql_table).get_cache("views")
    cache.put("home", "<html>")
    rows = f"SELECT COUNT(*) FROM {mssql_table} WHERE [sid] LIKE N'views:%'"
    assert standin.execute(rows) == [(1,)]

    def logout(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        session = environ["beaker.session"]
        session["x"] = 1
        end_session(session)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    config = {"session.type": "ext:mssql", "session.url": standin.url, "session.table": mssql_table}
    WSGIClient(SessionMiddleware(logout, config), cookie="beaker.session.id=views").get("/logout")
    assert standin.execute(rows) == [(1,)]
    assert cache.get("home") == "<html>"


# -- 7. AppLock.release() from another thread -------------------------------------------------------
def test_applock_released_from_another_thread(standin, store, mssql_table):
    held: list[Any] = []
    thread = threading.Thread(target=lambda: held.append(store.acquire_applock("cross", timeout_ms=0)))
    thread.start()
    thread.join(60)
    assert held and held[0] is not None
    held[0].release()  # this thread never pinned anything
    assert store.pool.stats()["checked_out"] == 0
    other = MSSQLStore(url=standin.url, table=mssql_table)
    try:
        lock = other.acquire_applock("cross", timeout_ms=0)
        assert lock is not None  # released on the server, not just forgotten
        lock.release()
    finally:
        other.close()
    assert_clean_connection(store, "cross")


# -- 8. every store's sweeper settings count ---------------------------------------------------------
def test_each_store_on_a_shared_sweeper_gets_its_callback(standin, mssql_table):
    calls: dict[str, list[Any]] = {"a": [], "b": []}
    a = MSSQLStore(url=standin.url, table=mssql_table, auto_remove=True, auto_remove_interval=3600,
                   auto_remove_callback=lambda e, n: calls["a"].append((e, n)))
    b = MSSQLStore(url=standin.url, table=mssql_table, auto_remove=True, auto_remove_interval=60,
                   auto_remove_callback=lambda e, n: calls["b"].append((e, n)))
    try:
        # Registered before first use and never started: no background run can add calls to the count.
        sweeper = sweeper_for(a, start=False)
        a.set("x", "v")
        b.set("y", "v")
        assert sweeper is a._sweeper is b._sweeper and not sweeper.alive
        assert sweeper.interval == 60  # the shortest
        sweeper.run_once()
        assert calls == {"a": [(None, 0)], "b": [(None, 0)]}
    finally:
        a.close()
        b.close()


# -- 9. the stand-in: an attention under XACT_ABORT ON rolls the transaction back --------------------
@pytest.mark.engine_needs("table_hints")  # counts the open transaction's row WITH (NOLOCK)
@pytest.mark.parametrize(("xact_abort", "trancount_after"), [("ON", 0), ("OFF", 1)])
def test_attention_rolls_back_only_under_xact_abort(standin, mssql_table, xact_abort, trancount_after):
    insert = f"INSERT INTO {mssql_table} ([sid], [session], [expires]) VALUES"
    standin.execute(f"{insert} (N'k', N'v', GETUTCDATE())")
    holder = standin.connect()  # autocommit off: its UPDATE keeps the X lock
    raw = RawClient(standin)
    spid = raw.spid
    new_rows = f"SELECT COUNT(*) FROM {mssql_table} WITH (NOLOCK) WHERE [sid] = N'new'"
    try:
        holder.cursor().execute(f"UPDATE {mssql_table} SET [session] = N'held' WHERE [sid] = N'k'")
        raw.send_batch(f"SET XACT_ABORT {xact_abort}; BEGIN TRANSACTION; "
                       f"{insert} (N'new', N'x', GETUTCDATE()); "
                       f"UPDATE {mssql_table} SET [session] = N'raw' WHERE [sid] = N'k'")
        assert wait_until(lambda: spid in standin.engine.locks.waits)  # blocked on the holder's lock
        raw.attention()  # the client gives up (a query timeout)
        assert is_attention_ack(raw.read_message())
        assert standin.engine.sessions[spid].trancount == trancount_after
        assert standin.execute(new_rows) == [(1 - (xact_abort == "ON"),)]
    finally:
        holder.rollback()
        holder.close()
        raw.close()


def test_driver_errors_without_text_get_words(store):
    error = store._translate(pymssql.OperationalError((20047, b"")), "get")
    assert "error 20047" in str(error) and "connection is dead" in str(error)
    assert "20047): 20047" not in str(error)


def test_save_that_never_learns_its_outcome_says_so(standin, mssql_table):
    """Every conditional UPDATE fails with a connection-ending error (40613): the save re-reads, sees
    nothing committed, sends again, and at retry_budget gives up naming the real cause."""
    from beaker_mssql.errors import SaveConflictError

    with MSSQLStore(url=standin.url, table=mssql_table, retry_budget=0.3) as store:
        store.set("u", "v")
        loaded = store.load("u")
        standin.faults.raise_error(40613, times=None, pattern=r"^UPDATE")
        with pytest.raises(SaveConflictError, match="whether its last attempt committed is unknown"):
            store.save("u", "w", loaded)
        standin.faults.clear()
        assert store.get("u") == "v"
        assert_clean_connection(store)


# -- 10. create_table's DDL sets XACT_ABORT for its own transaction only ----------------------------
@pytest.mark.parametrize("fails", [False, True])
def test_create_table_leaves_no_xact_abort_on_the_pooled_connection(standin, scratch_table, fails):
    with MSSQLStore(url=standin.url, table=scratch_table, pool_size=1, pool_max_overflow=0) as store:
        if fails:  # the DDL batch dies inside its transaction (a non-transient error: not retried)
            standin.faults.raise_error(1105, times=1, pattern="CREATE TABLE")
            with pytest.raises(Exception, match="1105"):  # noqa: B017 - the error class is the store's
                store.create_table()
        else:
            store.create_table()
        assert store.pool.stats()["discarded"] == 0  # the same connection goes on serving
        assert_clean_connection(store)


# -- 11. a release whose connection dies is a release ---------------------------------------------------
def test_applock_release_on_a_dying_connection_still_releases(standin, store, mssql_table):
    """The connection breaks under sp_releaseapplock (a failover): the server drops the lock with the
    session, so the release succeeds, the pin is gone and another connection gets the lock at once."""
    store.set("warm", "v")
    lock = store.acquire_applock("save:x", timeout_ms=1000)
    assert lock is not None
    standin.faults.cut_reply(pattern="sp_releaseapplock")
    lock.release()  # no driver error escapes to the request that held it
    assert store.pool.pinned() is None and store.pool.stats()["checked_out"] == 0
    with MSSQLStore(url=standin.url, table=mssql_table) as other:
        again = other.acquire_applock("save:x", timeout_ms=0)
        assert again is not None
        again.release()
    assert_clean_connection(store, "save:x")
