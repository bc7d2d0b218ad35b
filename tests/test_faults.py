"""Failure behaviour through real pymssql: the database down, connections dropped, deadlocks, bad logins,
a sweep dying half-way.

Faults are injected in the stand-in (``standin`` fixture; those tests skip against a real server).
Tests that only need a wrong password or a missing database also run against BEAKER_MSSQL_TEST_URL.
No test asserts a wall-clock time: "does not hang" means the call returns (with an error) at all,
with login/query timeouts of one or two seconds so that a hang would show up as a slow failure.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, quote

import pytest
from beaker.middleware import SessionMiddleware
from helpers import CallLog, WSGIClient

from beaker_mssql import config
from beaker_mssql.errors import (
    ConnectionFailedError,
    DatabaseError,
    MSSQLStoreError,
    WriteOutcomeUnknownError,
)
from beaker_mssql.namespace import close_all
from beaker_mssql.store import MSSQLStore
from beaker_mssql.testing import SQLServerStandIn

WSGIApp = Callable[..., Any]


# -- helpers ------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    """Every test gets its own pools (the namespace registry is process-wide)."""
    close_all()
    yield
    close_all()


def session_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """/write?v=X stores X; /read shows it; /delete deletes the session; /plain never touches it."""
    path = environ["PATH_INFO"]
    if path == "/plain":
        body = "plain"
    else:
        session = environ["beaker.session"]
        if path == "/write":
            session["value"] = parse_qs(environ.get("QUERY_STRING", ""))["v"][0]
            session.save()
            body = "ok"
        elif path == "/read":
            body = repr(session.get("value"))
        elif path == "/delete":
            session.delete()
            body = "deleted"
        else:
            body = "?"
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode("utf-8")]


def middleware(url: str, table: str, **options: Any) -> SessionMiddleware:
    opts: dict[str, Any] = {
        "type": "ext:mssql",
        "url": url,
        "table": table,
        "data_serializer": "json",
        "login_timeout": 2,
        "query_timeout": 2,
    }
    opts.update(options)
    return SessionMiddleware(session_app, **opts)


def table_name() -> str:
    return f"[dbo].[t_fault_{uuid.uuid4().hex[:10]}]"


def stored(server: Any, table: str, sid: str) -> Optional[str]:
    rows = server.execute(f"SELECT [session] FROM {table} WHERE [sid] = N'{sid}'")
    return None if not rows else str(rows[0][0])


Recorder = CallLog  # collects on_error / on_session_error / auto_remove_callback calls (thread-safe)


def assert_no_password(password: str, *texts: str) -> None:
    assert password, "the test needs a non-empty password"
    for text in texts:
        assert password not in text, f"the password leaked into: {text[:300]!r}"


# -- the database is down when the application starts ------------------------------------------------
def test_database_down_at_startup_fails_clearly_then_recovers_without_restart(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A private stand-in (stopping it cannot disturb other tests); this test needs no fixture server."""
    caplog.set_level(logging.DEBUG, logger="beaker_mssql")
    with SQLServerStandIn() as server:
        table = table_name()
        with MSSQLStore(url=server.url, table=table) as setup:
            setup.create_table()
        port = server.port
        server.stop()  # the database is down before the app exists

        errors, session_errors = Recorder(), Recorder()
        app = middleware(server.url, table, on_error=errors, on_session_error=session_errors)
        client = WSGIClient(app)

        # A request that does not use the session is unaffected.
        assert client.get("/plain") == "plain"
        # One that needs it fails with our error (no hang: the port refuses at once, timeouts are 2 s).
        with pytest.raises(ConnectionFailedError) as info:
            client.get("/write?v=1")
        message = str(info.value)
        assert "127.0.0.1" in message and str(port) in message and server.database in message
        assert_no_password(server.password, message, repr(info.value), caplog.text)
        assert errors.calls, "on_error was not called"
        assert session_errors.calls, "on_session_error was not called"
        assert isinstance(session_errors.calls[0][0], ConnectionFailedError)
        # Still down: a second request fails the same way (nothing cached a broken state).
        with pytest.raises(ConnectionFailedError):
            client.get("/write?v=1")

        server.start()  # the database comes back on the same port; the app is not restarted
        assert server.port == port
        assert client.get("/write?v=2") == "ok"
        assert client.get("/read") == "'2'"
        assert stored(server, table, client.sid) is not None


def test_server_that_accepts_but_never_answers_hits_the_login_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A black hole: the TCP handshake completes (the kernel's backlog) but nothing ever answers the login.
    login_timeout (1 s) must end each attempt; a watchdog thread only detects a hang, it measures nothing."""
    caplog.set_level(logging.DEBUG, logger="beaker_mssql")
    hole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    port = hole.getsockname()[1]
    password = "Hole-" + uuid.uuid4().hex
    outcome: list[BaseException] = []
    try:
        with MSSQLStore(
            url=f"mssql://sa:{password}@127.0.0.1:{port}/test", login_timeout=1, retries=0
        ) as store:

            def call() -> None:
                try:
                    store.get("abc")
                except BaseException as exc:
                    outcome.append(exc)

            worker = threading.Thread(target=call, daemon=True)
            worker.start()
            worker.join(60)
            assert not worker.is_alive(), "store.get() hung although login_timeout is 1 s"
    finally:
        hole.close()
    assert outcome and isinstance(outcome[0], ConnectionFailedError), outcome
    assert str(port) in str(outcome[0])
    assert_no_password(password, str(outcome[0]), repr(outcome[0]), caplog.text)


def test_session_survives_server_restart_between_requests(standin: SQLServerStandIn) -> None:
    """Pooled connections all die when the server restarts between two requests; the next request
    replaces them (one new login) and finds the session."""
    table = table_name()
    with MSSQLStore(url=standin.url, table=table) as setup:
        setup.create_table()
    try:
        client = WSGIClient(middleware(standin.url, table))
        assert client.get("/write?v=before") == "ok"
        assert client.get("/read") == "'before'"
        standin.stop()
        standin.start()
        standin.reset_stats()
        assert client.get("/read") == "'before'"
        assert standin.stats()["logins"] == 1
    finally:
        standin.execute(f"DROP TABLE {table}")


def test_request_during_outage_fails_then_works(standin: SQLServerStandIn) -> None:
    """An existing session during an outage: the request fails with our error, the session is not lost."""
    table = table_name()
    with MSSQLStore(url=standin.url, table=table) as setup:
        setup.create_table()
    try:
        client = WSGIClient(middleware(standin.url, table))
        assert client.get("/write?v=kept") == "ok"
        sid = client.sid
        standin.stop()
        with pytest.raises(ConnectionFailedError):
            client.get("/read")
        standin.start()
        assert client.get("/read") == "'kept'"
        assert client.sid == sid
    finally:
        standin.execute(f"DROP TABLE {table}")


def test_server_that_stops_answering_hits_the_query_timeout(
    standin: SQLServerStandIn, mssql_table: str
) -> None:
    """A server that accepts the request but never answers: query_timeout (1 s) ends the wait with an
    error; the connection is discarded and the store works once the server answers again."""
    with MSSQLStore(url=standin.url, table=mssql_table, query_timeout=1, retries=1) as store:
        store.set("abc", "x")
        standin.faults.latency(4)
        with pytest.raises(MSSQLStoreError):
            store.get("abc")
        standin.faults.latency(0)
        assert store.get("abc") == "x"
        assert store.pool.stats()["discarded"] >= 1


# -- connection dropped ---------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/read", "/write?v=2"])
def test_dropped_connection_mid_request_is_replaced_and_retried(
    standin: SQLServerStandIn, mssql_table: str, path: str
) -> None:
    errors = Recorder()
    client = WSGIClient(middleware(standin.url, mssql_table, retries=1, on_error=errors))
    assert client.get("/write?v=1") == "ok"  # warm: one pooled connection
    sid = client.sid
    standin.reset_stats()
    standin.faults.drop_next_request(1)
    body = client.get(path)
    assert body in ("'1'", "ok")
    stats = standin.stats()
    assert stats["logins"] == 1, "the dropped connection was not replaced by exactly one new login"
    assert errors.calls and isinstance(errors.calls[0][1], str)
    expected = "'1'" if path == "/read" else "'2'"
    assert client.get("/read") == expected
    assert client.sid == sid


def test_dropped_connection_on_store_load_and_save(standin: SQLServerStandIn, mssql_table: str) -> None:
    """A read is simply retried; an unconditional write whose outcome is unknown is not re-sent."""
    with MSSQLStore(url=standin.url, table=mssql_table, retries=1) as store:
        store.set("s1", "v1")
        before = store.pool.stats()
        standin.faults.drop_next_request(1)
        assert store.get("s1") == "v1"
        standin.faults.drop_next_request(1)
        with pytest.raises(WriteOutcomeUnknownError, match="not sent again"):
            store.set("s1", "v2")
        assert store.get("s1") == "v1"  # dropped before it ran: the old value, and nothing re-sent
        after = store.pool.stats()
        assert after["discarded"] - before["discarded"] == 2
        assert after["connects"] - before["connects"] == 2
        assert standin.execute(f"SELECT COUNT(*) FROM {mssql_table}") == [(1,)]


def test_connection_killed_while_a_save_is_in_flight(standin: SQLServerStandIn, mssql_table: str) -> None:
    """The server goes away while the upsert is on the wire (delayed by the latency fault) and comes back
    at once. Whatever the timing, the outcome is consistent: either the save succeeded (retried on a new
    connection) and the new value is stored, or it raised and the old value is intact -- never a half
    write, never a duplicate row, never silence."""
    with MSSQLStore(url=standin.url, table=mssql_table, retries=1, query_timeout=10) as store:
        store.set("inflight", "v1")
        outcome: list[object] = []

        def save() -> None:
            try:
                store.set("inflight", "v2")
                outcome.append("ok")
            except BaseException as exc:
                outcome.append(exc)

        standin.faults.latency(0.5)
        worker = threading.Thread(target=save, daemon=True)
        worker.start()
        threading.Event().wait(0.2)  # let the request reach the server (either order is a valid test)
        standin.stop()
        standin.faults.latency(0)
        standin.start()
        worker.join(60)
        assert not worker.is_alive()
        assert len(outcome) == 1
        if outcome[0] == "ok":
            assert store.get("inflight") == "v2"
        else:
            assert isinstance(outcome[0], MSSQLStoreError), outcome
            assert store.get("inflight") == "v1"
        assert standin.execute(f"SELECT COUNT(*) FROM {mssql_table}") == [(1,)]


def test_save_that_cannot_complete_fails_loudly(standin: SQLServerStandIn, mssql_table: str) -> None:
    """Dropped more often than retries allow: the request raises; the old value is still stored."""
    session_errors = Recorder()
    client = WSGIClient(middleware(standin.url, mssql_table, retries=1, on_session_error=session_errors))
    assert client.get("/write?v=old") == "ok"
    sid = client.sid
    standin.faults.drop_next_request(5)  # first attempt + the retry (+ the retry's login batch)
    with pytest.raises(ConnectionFailedError):
        client.get("/write?v=new")
    standin.faults.clear()
    assert session_errors.calls, "on_session_error was not called for the failed save"
    assert client.get("/read") == "'old'"
    assert client.sid == sid
    text = stored(standin, mssql_table, sid)
    assert text is not None and "new" not in text


def test_store_save_with_no_retries_fails_on_first_drop(standin: SQLServerStandIn, mssql_table: str) -> None:
    with MSSQLStore(url=standin.url, table=mssql_table, retries=0) as store:
        store.set("s1", "v1")
        standin.faults.drop_next_request(1)
        with pytest.raises(ConnectionFailedError):
            store.set("s1", "v2")
        assert store.get("s1") == "v1"


def test_transient_load_failure_never_silently_replaces_the_session(
    standin: SQLServerStandIn, mssql_table: str
) -> None:
    """SessionMiddleware defaults to invalidate_corrupt=True, and Beaker treats *any* exception from a load
    as corruption: it makes a new session id and loads again. If the database answers that second load,
    the user is silently logged out (a fresh empty session, a new cookie) although nothing was corrupt.
    A load that failed for a database reason must fail the request (or succeed with the real data)."""
    client = WSGIClient(middleware(standin.url, mssql_table, retries=1))
    assert client.get("/write?v=mine") == "ok"
    sid = client.sid
    standin.faults.drop_next_request(2)  # the load and its retry fail; Beaker's invalidate path loads again
    try:
        body: Optional[str] = client.get("/read")
    except MSSQLStoreError:
        body = None  # failing loudly is the right outcome
    if body is not None:
        assert (body, client.sid) == ("'mine'", sid), "a database hiccup replaced the user's session"
    standin.faults.clear()
    assert client.get("/read") == "'mine'"
    assert client.sid == sid


# -- deadlock victim / lock timeout -----------------------------------------------------------------
def _count_updates(standin: SQLServerStandIn, table: str) -> int:
    return sum(1 for batch in standin.sql_log if "UPDATE" in batch.upper() and table in batch)


@pytest.fixture
def logged(standin: SQLServerStandIn) -> Iterator[SQLServerStandIn]:
    standin.log_sql = True
    standin.reset_stats()
    try:
        yield standin
    finally:
        standin.log_sql = False


@pytest.mark.parametrize("number", [1205, 1222])
@pytest.mark.parametrize("retries", [0, 1, 2])
def test_transient_error_on_save_is_retried_as_configured(
    logged: SQLServerStandIn, mssql_table: str, number: int, retries: int
) -> None:
    with MSSQLStore(url=logged.url, table=mssql_table, retries=retries) as store:
        store.set("sid-1", "first")
        # Fails `retries` times: the last allowed attempt succeeds.
        logged.reset_stats()
        if retries:
            logged.faults.raise_error(number, times=retries, pattern="UPDATE")
            store.set("sid-1", "second")
            assert _count_updates(logged, mssql_table) == retries + 1
            assert store.get("sid-1") == "second"
        # Fails once more than that: a clear error after exactly retries + 1 attempts.
        logged.reset_stats()
        logged.faults.raise_error(number, times=retries + 1, pattern="UPDATE")
        with pytest.raises(DatabaseError) as info:
            store.set("sid-1", "third")
        assert _count_updates(logged, mssql_table) == retries + 1
        assert info.value.number == number
        assert str(number) in str(info.value)
        assert info.value.method == "set"
        assert store.get("sid-1") == ("second" if retries else "first")
        assert logged.execute(f"SELECT COUNT(*) FROM {mssql_table}") == [(1,)]


def test_deadlock_on_beaker_save_fails_the_request(logged: SQLServerStandIn, mssql_table: str) -> None:
    session_errors = Recorder()
    client = WSGIClient(middleware(logged.url, mssql_table, retries=2, on_session_error=session_errors))
    assert client.get("/write?v=a") == "ok"
    logged.reset_stats()
    logged.faults.raise_error(1205, times=2, pattern="UPDATE")
    assert client.get("/write?v=b") == "ok"  # 2 failures, 3rd attempt wins
    assert _count_updates(logged, mssql_table) == 3
    logged.reset_stats()
    logged.faults.raise_error(1205, times=3, pattern="UPDATE")
    with pytest.raises(DatabaseError) as info:
        client.get("/write?v=c")
    assert info.value.number == 1205
    assert _count_updates(logged, mssql_table) == 3
    assert session_errors.calls
    assert client.get("/read") == "'b'"


# -- login failure / unknown database -------------------------------------------------------------------
def _url(server: Any, password: Optional[str] = None, database: Optional[str] = None) -> str:
    pw = server.password if password is None else password
    db = server.database if database is None else database
    return f"mssql://{quote(server.user, safe='')}:{quote(pw, safe='')}@{server.host}:{server.port}/{db}"


@pytest.mark.pymssql_login_numbers
def test_wrong_password_one_clear_error_without_the_password(
    mssql_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "Wr0ng-" + uuid.uuid4().hex
    errors = Recorder()
    if mssql_server.is_standin:
        mssql_server.reset_stats()
    with MSSQLStore(
        url=_url(mssql_server, password=wrong), login_timeout=2, retries=2, on_error=errors
    ) as store:
        with pytest.raises(ConnectionFailedError) as info:
            store.get("abc")
        exc = info.value
        text = str(exc)
        assert mssql_server.host in text and mssql_server.database in text
        assert "18456" in text or "login failed" in text.lower()
        if config.DEFAULT_DRIVER == "pytds":  # python-tds reports this login's own number
            assert exc.number == 18456
        assert_no_password(
            wrong, text, repr(exc), caplog.text, repr(store), repr(store.settings), repr(errors.calls)
        )
        if mssql_server.is_standin:
            # Not retried: a wrong password stays wrong (and retrying can lock the account).
            assert mssql_server.stats()["login_failures"] == 1


_FAILOVER_CHILD = """
import sys
from beaker_mssql.store import MSSQLStore
good, wrong, table = sys.argv[1:4]
with MSSQLStore(url=good, table=table, login_timeout=2, retries=0) as store:
    try:
        store.get("abc")  # refused with 40613: from now on pymssql reports 40613 for any failed login
    except Exception as exc:
        print("first:", type(exc).__name__)
    print("second:", store.get("abc"))  # the server is fine again
with MSSQLStore(url=wrong, table=table, login_timeout=2, retries=2) as store:
    try:
        store.get("abc")
    except Exception as exc:
        print("wrong:", type(exc).__name__, exc)
"""


def test_wrong_password_not_retried_even_after_a_failover_error(
    standin: SQLServerStandIn, mssql_table: str
) -> None:
    """pymssql 2.4 keeps the most severe login error number of the process: once any login failed with
    40613 ("database not currently available", severity 17, as during an Azure failover), every later
    login failure -- a wrong password, a missing database -- is reported as 40613 too, even after
    successful logins in between. The store must not trust that number to decide on retries: a wrong
    password retried `retries` times means more failed logins (and account lockout policies count them).

    Runs the client in a child process, because the poisoned pymssql state would outlive this test."""
    wrong = "Wr0ng-" + uuid.uuid4().hex
    standin.faults.refuse_logins(1, number=40613)
    proc = subprocess.run(
        [sys.executable, "-c", _FAILOVER_CHILD, standin.url, _url(standin, password=wrong), mssql_table],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "second: None" in output, output
    assert_no_password(wrong, output)
    assert_no_password(standin.password, output)
    # One refused login for the failover, then exactly one for the wrong password.
    assert standin.stats()["login_failures"] == 2, f"a wrong password was retried: {output}"
    assert "wrong: ConnectionFailedError" in output, output


def test_refused_login_never_shows_the_real_password(
    standin: SQLServerStandIn, mssql_table: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    standin.faults.refuse_logins(None, number=18456)
    with MSSQLStore(url=standin.url, table=mssql_table, login_timeout=2) as store:
        with pytest.raises(ConnectionFailedError) as info:
            store.set("abc", "data")
        assert standin.stats()["login_failures"] == 1
        assert_no_password(standin.password, str(info.value), repr(info.value), caplog.text)
        standin.faults.clear()
        store.set("abc", "data")  # the same store works once logins are accepted again
        assert store.get("abc") == "data"


@pytest.mark.pymssql_login_numbers
def test_unknown_database_names_server_and_database(
    mssql_server: Any, mssql_profile: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    database = "no_such_db_" + uuid.uuid4().hex[:8]
    with MSSQLStore(url=_url(mssql_server, database=database), login_timeout=2) as store:
        with pytest.raises(ConnectionFailedError) as info:
            store.get("abc")
    text = str(info.value)
    assert database in text and mssql_server.host in text
    # pymssql keeps the most severe login message of the process: after any earlier 18456 (and on a real
    # server, which sends 18456 after 4060) it reports 18456 here. The message still names the database.
    # (Babelfish answers 911: profile data.)
    if config.DEFAULT_DRIVER == "pymssql":
        assert info.value.number in (4060, 18456, mssql_profile.missing_database_error)
    elif mssql_server.is_standin:  # python-tds reports this login's own number: 4060, or Babelfish's 911
        assert info.value.number == mssql_profile.missing_database_error
    else:  # python-tds reports the last message of a refused login: SQL Server sends 18456 after 4060
        assert info.value.number in (mssql_profile.missing_database_error, 18456)
    assert_no_password(mssql_server.password, text, repr(info.value), caplog.text)


@pytest.mark.pymssql_login_numbers
def test_refused_login_4060_is_not_retried(standin: SQLServerStandIn, mssql_table: str) -> None:
    standin.faults.refuse_logins(None, number=4060)
    with MSSQLStore(url=standin.url, table=mssql_table, login_timeout=2, retries=3) as store:
        with pytest.raises(ConnectionFailedError) as info:
            store.get("abc")
    # pymssql: see test_unknown_database_names_server_and_database; python-tds reports the number sent.
    assert info.value.number in ((4060,) if config.DEFAULT_DRIVER == "pytds" else (4060, 18456))
    assert standin.stats()["login_failures"] == 1


# -- a sweep failing half-way ---------------------------------------------------------------------------
def _fill(server: Any, table: str, expired: int, live: int) -> None:
    """Rows in batches of multi-row VALUES (the back door when it is a stand-in)."""

    def rows(prefix: str, count: int, delta: int) -> list[str]:
        return [
            f"(N'{prefix}{i:06d}', N'data-{prefix}{i}', DATEADD(second, {delta}, GETUTCDATE()))"
            for i in range(count)
        ]

    values = rows("x", expired, -600) + rows("L", live, 3600)
    for start in range(0, len(values), 500):
        chunk = ", ".join(values[start : start + 500])
        server.execute(f"INSERT INTO {table} ([sid], [session], [expires]) VALUES {chunk}")


def _counts(server: Any, table: str) -> tuple[int, int]:
    live = server.execute(f"SELECT COUNT(*) FROM {table} WHERE [expires] > GETUTCDATE()")[0][0]
    expired = server.execute(f"SELECT COUNT(*) FROM {table} WHERE [expires] <= GETUTCDATE()")[0][0]
    return int(live), int(expired)


def test_sweep_failing_on_second_batch_leaves_table_consistent(
    standin: SQLServerStandIn, mssql_table: str
) -> None:
    _fill(standin, mssql_table, expired=250, live=20)
    assert _counts(standin, mssql_table) == (20, 250)
    with MSSQLStore(url=standin.url, table=mssql_table, auto_remove_batch_size=100, retries=1) as store:
        progress: list[int] = []

        def on_progress(total: int) -> None:
            progress.append(total)
            if len(progress) == 1:  # arm the fault for the 2nd DELETE batch
                standin.faults.raise_error(9002, times=1, pattern=r"DELETE\s+TOP")

        with pytest.raises(DatabaseError) as info:
            store.destroy_expired(progress=on_progress)
        assert info.value.number == 9002
        assert progress == [100]
        # The first batch stays deleted, the failed one deleted nothing, live rows are untouched.
        assert _counts(standin, mssql_table) == (20, 150)
        assert store.length() == 20
        # The next sweep finishes the job.
        assert store.destroy_expired() == 150
        assert _counts(standin, mssql_table) == (20, 0)
        assert sorted(store.all()) == [f"L{i:06d}" for i in range(20)]


def test_background_sweeper_survives_a_failed_run_and_reports_it(
    standin: SQLServerStandIn, mssql_table: str
) -> None:
    _fill(standin, mssql_table, expired=120, live=5)
    reports = Recorder()
    errors = Recorder()
    standin.faults.raise_error(9002, times=1, pattern=r"DELETE\s+TOP")
    store = MSSQLStore(
        url=standin.url,
        table=mssql_table,
        auto_remove=True,
        auto_remove_interval=0.05,
        auto_remove_batch_size=50,
        auto_remove_callback=reports,
        on_error=errors,
    )
    try:
        assert store.length() == 5  # first use starts the sweeper
        # Wait on the sweeper's reports for a failed run followed by a successful one.
        assert reports.wait_for(lambda calls: any(c[0] is None and c[1] > 0 for c in calls)), (
            f"no successful sweep reported: {reports.snapshot()!r}"
        )
        calls = reports.snapshot()
        first_error, first_count = calls[0]
        assert isinstance(first_error, DatabaseError) and first_error.number == 9002
        assert first_count == 0
        successes = [c for c in calls if c[0] is None]
        assert successes and sum(c[1] for c in successes) == 120
        assert any(c[1] == "auto_remove" for c in errors.calls), errors.calls
        assert store._sweeper is not None and store._sweeper.alive
        assert _counts(standin, mssql_table) == (5, 0)
    finally:
        store.close()
