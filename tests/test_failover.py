"""Transient faults ridden out within a time budget (issue 13, first part): the retry policy, login
retries, a failover of the stand-in in the middle of a loaded run, and Azure SQL defaults."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from typing import Any, Callable, Optional

import pytest
from beaker.middleware import SessionMiddleware
from helpers import WSGIClient, run_threads

from beaker_mssql import MSSQLStore
from beaker_mssql.config import parse_settings
from beaker_mssql.errors import ConnectionFailedError, MSSQLStoreError
from beaker_mssql.retry import (
    AMBIGUOUS_NUMBERS,
    DEFINITE_NUMBERS,
    Outcome,
    classify,
    login_error_number,
    login_is_transient,
)

# Microsoft's catalogue of transient errors (Azure SQL "Troubleshoot transient connection errors",
# https://learn.microsoft.com/azure/azure-sql/database/troubleshoot-common-errors-issues) plus the
# deadlock/lock-timeout pair and the network errors the issue names.
TRANSIENT = [40613, 40197, 40501, 49918, 49919, 49920, 4221, 10928, 10929, 40540,
             233, 10053, 10054, 10060, 64, 1205, 1222]


@pytest.mark.parametrize("number", TRANSIENT)
def test_each_documented_transient_number_is_retried(number):
    assert classify(number, broken=False) is not Outcome.PERMANENT
    # Only a number whose statement certainly did not run may be re-sent blindly after a write.
    assert (classify(number, broken=False) is Outcome.DEFINITE) == (number in DEFINITE_NUMBERS)
    assert number in DEFINITE_NUMBERS | AMBIGUOUS_NUMBERS


@pytest.mark.parametrize("number", [208, 2627, 18456, 4060, 8152, 102])
def test_other_numbers_are_not(number):
    assert classify(number, broken=False) is Outcome.PERMANENT


@pytest.mark.parametrize(("text", "connected_before", "transient"), [
    ("DB-Lib error message 20009, severity 9:\nUnable to connect: Adaptive Server is unavailable or does "
     "not exist (10.0.0.1)\nNet-Lib error during Connection refused (111)", False, True),
    ("Database 'app' on server 'x' is not currently available. Please retry the connection later."
     "DB-Lib error message 20018, severity 17:", False, True),
    ("DB-Lib error message 20018, severity 20:\nGeneral SQL Server error", False, True),  # 40197/40501
    ("Login failed for user 'sa'.DB-Lib error message 20018, severity 14:", True, False),  # 18456
    ("DB-Lib error message 20018, severity 14:\nGeneral SQL Server error", True, False),  # stale number
    ("DB-Lib error message 20018, severity 11:\nGeneral SQL Server error", False, False),  # 4060 at start
    ("DB-Lib error message 20018, severity 11:\nGeneral SQL Server error", True, True),  # 4060 mid-failover
])
def test_login_classification(text, connected_before, transient):
    assert login_is_transient(text, connected_before) is transient


@pytest.mark.parametrize(("number", "text", "actual"), [
    (18456, "Login failed for user 'sa'.DB-Lib error message 20018, severity 14:", 18456),
    (40613, "DB-Lib error message 20018, severity 14:\nGeneral SQL Server error", 18456),  # stale number
    (40613, "DB-Lib error message 20018, severity 11:\nGeneral SQL Server error", 4060),
    (40613, "Database 'a' ... is not currently available.DB-Lib error message 20018, severity 17:", 40613),
    (20009, "Unable to connect: Adaptive Server is unavailable", 20009),
])
def test_stale_login_numbers_are_corrected_by_severity(number, text, actual):
    assert login_error_number(number, text) == actual


@pytest.mark.standin_only
def test_wrong_password_after_a_failover_is_still_reported_as_a_wrong_password(standin, mssql_table):
    with MSSQLStore(url=standin.url, table=mssql_table, retry_budget=30) as store:
        standin.faults.refuse_logins(1, number=40613)  # pymssql keeps 40613 for later failed logins
        store.get("x")  # retried past the refusal
    bad = standin.url.replace(standin.password, "wrong-password")
    with MSSQLStore(url=bad, table=mssql_table) as store, pytest.raises(ConnectionFailedError) as info:
        store.get("x")
    assert info.value.number == 18456


@pytest.mark.standin_only
def test_transient_login_failures_are_retried_within_the_budget(standin, mssql_table):
    with MSSQLStore(url=standin.url, table=mssql_table, retry_budget=30) as store:
        store.set("warm", "v")
        store.pool.dispose()
        standin.reset_stats()
        standin.faults.refuse_logins(2, number=40613)
        assert store.get("warm") == "v"
        stats = standin.stats()
        assert (stats["login_failures"], stats["logins"]) == (2, 1)


@pytest.mark.standin_only
def test_wrong_password_is_never_retried(standin, mssql_table):
    with MSSQLStore(url=standin.url, table=mssql_table, retry_budget=30) as store:
        standin.faults.refuse_logins(None, number=40613)  # pymssql now repeats 40613 for later failures
        with pytest.raises(ConnectionFailedError):
            MSSQLStore(url=standin.url, table=mssql_table, retry_budget=0.3).get("x")
        standin.faults.clear()
        standin.reset_stats()
        standin.faults.refuse_logins(None, number=18456)
        with pytest.raises(ConnectionFailedError):
            store.get("x")
        assert standin.stats()["login_failures"] == 1  # one attempt: no retry, no lockout fuel


@pytest.mark.standin_only
def test_an_outage_longer_than_the_budget_fails_with_a_clear_error(standin, mssql_table):
    with MSSQLStore(url=standin.url, table=mssql_table, retry_budget=0.5) as store:
        store.set("k", "v")
        standin.reset_stats()
        standin.failover(seconds=3600)
        with pytest.raises(ConnectionFailedError, match="failed"):
            store.get("k")
        attempts = standin.stats()["login_failures"]
        assert 1 <= attempts <= 12  # gave up at the budget; the pool's probe interval bounds the attempts
        standin.faults.clear()
        assert store.get("k") == "v"


@pytest.mark.standin_only
def test_read_only_replica_write_is_retried_on_a_new_connection(standin, mssql_table):
    with MSSQLStore(url=standin.url, table=mssql_table) as store:
        store.set("k", "v1")
        before = store.pool.stats()["discarded"]
        standin.faults.raise_error(3906, times=1, pattern="INSERT")
        store.set("k", "v2")
        assert store.get("k") == "v2" and store.pool.stats()["discarded"] == before + 1


@pytest.mark.standin_only
@pytest.mark.parametrize("driver", ["pymssql", "pytds"])
@pytest.mark.parametrize("number", [40613, 4060])
def test_one_login_call_is_one_attempt_with_either_driver(standin, mssql_table, driver, number):
    """python-tds would retry a refused login by itself until login_timeout (drivers.py): with the
    budget at zero the store makes exactly one attempt and reports the server's own number."""
    with MSSQLStore(url=standin.url, table=mssql_table, driver=driver, retries=0, login_timeout=3) as store:
        standin.reset_stats()
        standin.faults.refuse_logins(None, number=number)
        with pytest.raises(ConnectionFailedError) as info:
            store.get("x")
        assert info.value.number == number
        assert standin.stats()["login_failures"] == 1
        standin.faults.clear()
        assert store.get("x") is None  # and the next call logs in normally


_REFUSED_CHILD = """
import sys
from beaker_mssql.store import MSSQLStore
url, driver = sys.argv[1:3]
with MSSQLStore(url=url, table="beaker_cache", driver=driver, retries=0, login_timeout=3) as store:
    try:
        store.get("x")
    except Exception as exc:
        print(type(exc).__name__, getattr(exc, "number", None))
        print(exc)
"""


@pytest.mark.standin_only
@pytest.mark.parametrize("driver", ["pymssql", "pytds"])
def test_failover_refusal_names_the_database_and_the_server(standin, driver):
    """40613 as Azure SQL words it ("Database '%.*ls' on server '%.*ls' is not currently available. ...",
    learn.microsoft.com/azure/azure-sql/database/troubleshoot-common-errors-issues): the database this
    login asked for (a name of this test's own) and the server's name (the stand-in's @@SERVERNAME)
    reach the store's error message. In a child process: pymssql keeps the text of the most severe
    failed login of its process (testing/README.md), so in a shared test run it may show another's."""
    database = "fo_" + uuid.uuid4().hex[:10]
    url = standin.url.rsplit("/", 1)[0] + "/" + database
    server_name = standin.execute("SELECT @@SERVERNAME")[0][0]
    standin.failover(seconds=3600)
    proc = subprocess.run([sys.executable, "-c", _REFUSED_CHILD, url, driver],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first, message = proc.stdout.splitlines()[:2]
    assert first == "ConnectionFailedError 40613", proc.stdout
    assert (f"Database '{database}' on server '{server_name}' is not currently available. Please retry the "
            "connection later. If the problem persists, contact customer support, and provide them with the "
            "session tracing ID of '") in message
    assert standin.password not in proc.stdout + proc.stderr
    assert standin.stats()["last_login_error"] == 40613


@pytest.mark.standin_only
def test_failover_under_load_loses_no_committed_session_data(standin, mssql_table):
    """16 threads x 200 requests, sweeper on; a 5-second failover in the middle. Every request succeeds
    (maybe after waiting) or fails with a clear error; every session holds its last acknowledged write
    (or a later one whose reply was lost); the run recovers by itself; logins during the outage stay few."""
    threads, requests = 16, 200
    config = {"session.type": "ext:mssql", "session.url": standin.url, "session.table": mssql_table,
              "session.data_serializer": "json", "session.auto_remove": "true",
              "session.auto_remove_interval": "0.5", "session.retry_budget": "3", "session.retries": "3",
              "session.pool_size": "4", "session.pool_max_overflow": "12"}

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        session = environ["beaker.session"]
        session["n"] = int(environ["QUERY_STRING"])
        session.save()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    wsgi = SessionMiddleware(app, config)
    halfway = threading.Event()
    done = [0]
    count_lock = threading.Lock()
    acked: dict[int, int] = {}
    attempted: dict[int, int] = {}
    sids: dict[int, str] = {}
    failures: list[BaseException] = []

    clients: dict[int, WSGIClient] = {}

    def client(n: int) -> None:
        sid = uuid.uuid4().hex
        sids[n] = sid
        c = clients[n] = WSGIClient(wsgi, cookie=f"beaker.session.id={sid}")
        for i in range(1, requests + 1):
            attempted[n] = i
            try:
                assert c.get(f"/?{i}") == "ok"
                acked[n] = i
            except MSSQLStoreError as exc:
                assert "failed" in str(exc) and standin.password not in str(exc)
                with count_lock:
                    failures.append(exc)
            with count_lock:
                done[0] += 1
                if done[0] == threads * requests // 3:
                    halfway.set()

    errors: list[BaseException] = []
    worker = threading.Thread(target=lambda: errors.extend(run_threads(client, threads, timeout=600)))
    worker.start()
    assert halfway.wait(300)
    before = standin.stats()["login_failures"]
    standin.failover(seconds=5)
    worker.join(600)
    assert errors == []
    during = standin.stats()["login_failures"] - before
    print(f"failover: {len(failures)} requests failed, {during} logins refused during the outage")
    assert during < threads * 20  # no stampede: the per-pool probe interval and the backoff spread them
    for n in range(threads):
        stored = standin.execute(f"SELECT [session] FROM {mssql_table} WHERE [sid] = N'{sids[n]}'")
        assert stored, f"thread {n}: its session row is gone"
        value = int(json.loads(stored[0][0])["n"])
        assert acked.get(n, 0) <= value <= attempted[n]
    assert len(failures) < threads * requests // 3  # most requests rode the outage out
    standin.faults.clear()  # the outage is over (in case a run finished inside it)
    for n in range(threads):  # the run recovered by itself: every session is usable again
        assert clients[n].get(f"/?{requests + 1}") == "ok"


def test_azure_hosts_require_tls_unless_told_otherwise():
    azure = parse_settings({"url": "mssql://u:p@myserver.database.windows.net/app"}).connection
    assert azure.encrypt == "require"
    mi = parse_settings({"url": "mssql://u:p@mi.abc123.database.windows.net:1433/app"}).connection
    assert mi.encrypt == "require"
    explicit = parse_settings({"url": "mssql://u:p@myserver.database.windows.net/app?encrypt=false"})
    assert explicit.connection.encrypt == "off"
    assert parse_settings({"url": "mssql://u:p@db.example/app"}).connection.encrypt is None


@pytest.mark.parametrize("exc", [ConnectionRefusedError(111, "Connection refused"),
                                 ConnectionResetError(104, "Connection reset by peer"),
                                 TimeoutError("timed out")])
def test_python_tds_socket_errors_are_transient_logins_without_a_server_number(exc):
    """python-tds passes the socket's own OSError through: its errno is no SQL Server number, and a
    refused or reset TCP connection (a listener moving during a failover) is worth another login."""
    from beaker_mssql.pool import error_message, error_number

    assert error_number(exc) is None
    assert login_is_transient(error_message(exc), connected_before=False)


@pytest.mark.standin_only
@pytest.mark.parametrize("driver", ["pymssql", "pytds"])
def test_a_shared_login_failure_keeps_its_error_number(standin, mssql_table, driver):
    """While logins fail, a thread arriving within probe_interval of another's failed attempt gets a copy of
    that failure instead of logging in: the copy carries the server's number with either driver."""
    with MSSQLStore(url=standin.url, table=mssql_table, driver=driver, retries=0) as store:
        store.pool.probe_interval = 3600.0  # "a moment ago" for the whole test: no timing involved
        standin.faults.refuse_logins(None, number=40613)
        numbers: list[Optional[int]] = []
        first_done, second_done = threading.Event(), threading.Event()

        def attempt(done: threading.Event, stay: Optional[threading.Event]) -> None:
            try:
                store.get("x")
            except ConnectionFailedError as exc:
                numbers.append(exc.number)
            done.set()
            if stay is not None:  # alive until the other has tried: a distinct thread, not a reused ident
                stay.wait(60)

        first = threading.Thread(target=attempt, args=(first_done, second_done))
        first.start()
        assert first_done.wait(60)
        second = threading.Thread(target=attempt, args=(second_done, None))
        second.start()  # shares the first's answer
        second.join(60)
        first.join(60)
        assert numbers == [40613, 40613]
        assert (store.pool.stats()["logins_skipped"], standin.stats()["login_failures"]) == (1, 1)
