"""SQLServerStandIn as an object: clock, counters, fault switches, restart, the CLI entry and the fixtures."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pymssql
import pytest

from beaker_mssql.errors import sqlserver_equivalent
from beaker_mssql.testing import Clock, Faults, RealServer, SQLError, SQLServerStandIn, run_standin

pytestmark = pytest.mark.standin_only


def _one(server: SQLServerStandIn, sql: str, **kwargs: Any) -> Any:
    with server.connect(autocommit=True, **kwargs) as conn:
        cursor = conn.cursor()
        cursor.execute(sql)
        return cursor.fetchone()


# -- clock ------------------------------------------------------------------------------------------------


def test_getdate_minus_getutcdate_is_the_utc_offset(standin: SQLServerStandIn) -> None:
    assert isinstance(standin.clock, Clock)
    expected = int(standin.clock.utc_offset.total_seconds() // 60)
    assert _one(standin, "SELECT DATEDIFF(minute, GETUTCDATE(), GETDATE())") == (expected,)
    standin.clock.utc_offset = timedelta(hours=-5)
    assert _one(standin, "SELECT DATEDIFF(minute, GETUTCDATE(), GETDATE())") == (-300,)


def test_advance_moves_getdate_and_getutcdate(standin: SQLServerStandIn) -> None:
    standin.clock.freeze()
    standin.clock.set(datetime(2024, 2, 29, 12, 0, 0))
    standin.clock.utc_offset = timedelta(hours=2)
    assert _one(standin, "SELECT GETUTCDATE(), GETDATE()") == (
        datetime(2024, 2, 29, 12), datetime(2024, 2, 29, 14))
    standin.clock.advance(86400 + 1.5)
    assert _one(standin, "SELECT GETUTCDATE(), GETDATE()") == (
        datetime(2024, 3, 1, 12, 0, 1, 500000), datetime(2024, 3, 1, 14, 0, 1, 500000))


def test_standin_fixture_put_the_clock_back(standin: SQLServerStandIn) -> None:
    # Runs after the tests above: their clock jumps must not leak.
    (now,) = _one(standin, "SELECT GETUTCDATE()")
    assert abs((now - datetime.utcnow()).total_seconds()) < 120
    assert not standin.clock.frozen


def test_utc_offset_argument(mssql_server: Any) -> None:
    with SQLServerStandIn(utc_offset=timedelta(hours=9, minutes=30)) as server:
        assert _one(server, "SELECT DATEDIFF(minute, GETUTCDATE(), GETDATE())") == (570,)


# -- counters --------------------------------------------------------------------------------------------


def test_counters_logins_requests_statements(standin: SQLServerStandIn) -> None:
    with standin.connect(autocommit=True) as conn:
        cursor = conn.cursor()
        cursor.execute("SELECT 1; SELECT 2")
        cursor.fetchall()
        cursor.nextset()
        cursor.fetchall()
        stats = standin.stats()
        assert stats["logins"] == 1
        # connect: conn_properties batch + `use [test]`; then one batch with two statements.
        assert stats["requests"] == 3
        assert stats["statements"] >= 2 + 1 + 10  # 10 SETs, USE, two SELECTs (engine may count SETs singly)
        cursor.execute("SELECT @@SPID")
        (spid,) = cursor.fetchone()
        per = standin.stats()["per_connection"][spid]
        assert per["requests"] == 4 and per["open"] and spid >= 51
        assert per["bytes_in"] > 0 and per["bytes_out"] > 0
    assert standin.wait_for_connections(0)
    assert standin.stats()["connections_open"] == 0
    standin.reset_stats()
    stats = standin.stats()
    assert (stats["logins"], stats["requests"], stats["statements"], stats["per_connection"]) == (0, 0, 0, {})


def test_statement_counter_is_exact_for_a_known_batch(standin: SQLServerStandIn) -> None:
    with standin.connect(autocommit=True) as conn:
        cursor = conn.cursor()
        standin.reset_stats()
        cursor.execute("SELECT 1; SELECT 2; SELECT 3")
        stats = standin.stats()
    assert (stats["requests"], stats["statements"]) == (1, 3)


def test_sql_log(mssql_server: Any) -> None:
    with SQLServerStandIn(log_sql=True) as server:
        with server.connect() as conn:
            conn.cursor().execute("SELECT %s", ("O'Brien",))
            conn.commit()
        assert server.sql_log[0].startswith("SET ARITHABORT ON;")
        assert server.sql_log[1:] == ["use [test]", "BEGIN TRAN", "SELECT N'O''Brien'", "COMMIT TRAN",
                                      "BEGIN TRAN"]
        server.reset_stats()
        assert server.sql_log == []


def test_back_door_execute_is_not_counted(standin: SQLServerStandIn) -> None:
    assert standin.execute("SELECT 1 AS [x]; SELECT 2") == [(1,), (2,)]
    assert standin.stats()["statements"] == 0
    with pytest.raises(SQLError) as info:
        standin.execute("SELECT * FROM [dbo].[nope_backdoor]")
    assert sqlserver_equivalent(info.value.number, info.value.message) == 208  # Babelfish: 33557097


# -- faults ---------------------------------------------------------------------------------------------


def test_refuse_logins_a_number_of_times(standin: SQLServerStandIn) -> None:
    standin.faults.refuse_logins(times=2)
    for _ in range(2):
        with pytest.raises(pymssql.OperationalError):
            standin.connect(login_timeout=5)
    assert _one(standin, "SELECT 1") == (1,)
    stats = standin.stats()
    assert (stats["login_failures"], stats["logins"], stats["last_login_error"]) == (2, 1, 18456)


def test_refuse_logins_with_another_number_until_cleared(standin: SQLServerStandIn) -> None:
    # 4060 (severity 11), not 40613 (severity 17): pymssql would report a 17 on every later failed
    # connect() in this process (see the README), confusing other tests' assertions.
    standin.faults.refuse_logins(number=4060)
    for _ in range(3):
        with pytest.raises(pymssql.OperationalError):
            standin.connect(login_timeout=5)
    assert standin.stats()["last_login_error"] == 4060
    standin.faults.clear()
    assert _one(standin, "SELECT 1") == (1,)


def test_drop_next_request(standin: SQLServerStandIn) -> None:
    with standin.connect(autocommit=True) as conn:
        cursor = conn.cursor()
        standin.faults.drop_next_request()
        with pytest.raises(pymssql.OperationalError):
            cursor.execute("SELECT 1")
    assert _one(standin, "SELECT 1") == (1,)  # only one request was dropped


def test_raise_error_pattern_and_times(standin: SQLServerStandIn, mssql_table: str) -> None:
    standin.faults.raise_error(1205, times=2, pattern=r"^\s*UPDATE")
    with standin.connect(autocommit=True) as conn:
        cursor = conn.cursor()
        cursor.execute(f"SELECT COUNT(*) FROM {mssql_table}")  # does not match: runs
        assert cursor.fetchone() == (0,)
        for _ in range(2):
            with pytest.raises(pymssql.OperationalError) as info:
                cursor.execute(f"UPDATE {mssql_table} SET [session] = N'x'")
            assert info.value.args[0] == 1205
            assert b"deadlock victim" in info.value.args[1]
        cursor.execute(f"UPDATE {mssql_table} SET [session] = N'x'")
        assert cursor.rowcount == 0


def test_raise_error_deadlock_rolls_back_the_transaction(standin: SQLServerStandIn, mssql_table: str) -> None:
    standin.faults.raise_error(1205, pattern="INSERT")
    with standin.connect(autocommit=True) as conn:
        cursor = conn.cursor()
        with pytest.raises(pymssql.OperationalError):
            cursor.execute(f"BEGIN TRANSACTION; DELETE FROM {mssql_table}; INSERT INTO {mssql_table} "
                           "([sid], [session], [expires]) VALUES (N'd', N'x', GETUTCDATE()); COMMIT")
        cursor.execute("SELECT @@TRANCOUNT")
        assert cursor.fetchone() == (0,)


def test_raise_error_custom_message(standin: SQLServerStandIn) -> None:
    with standin.connect(autocommit=True) as conn:
        standin.faults.raise_error(50001, message="custom trouble")  # after connect(): it sends SETs
        with pytest.raises(pymssql.OperationalError) as info:
            conn.cursor().execute("SELECT 1")
    assert info.value.args == (50001, info.value.args[1]) and info.value.args[1].startswith(b"custom trouble")


def test_latency_delays_each_request(standin: SQLServerStandIn) -> None:
    # Shown the way a user relies on it: added latency beyond the client's query timeout makes the
    # request time out, and clearing it makes the same connection's requests answer again.
    with standin.connect(autocommit=True, timeout=1) as conn:
        cursor = conn.cursor()
        standin.faults.latency(3)
        with pytest.raises(pymssql.OperationalError):
            cursor.execute("SELECT 1")
        standin.faults.latency(0)
    with standin.connect(autocommit=True, timeout=1) as conn:
        cursor = conn.cursor()
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)


def test_faults_object_is_exported() -> None:
    faults = Faults()
    assert not faults.active
    faults.latency(1)
    assert faults.active
    faults.clear()
    assert not faults.active


# -- restart, repr, lifecycle -------------------------------------------------------------------------------


def test_stop_start_keeps_port_and_data_and_drops_connections(standin: SQLServerStandIn,
                                                              mssql_table: str) -> None:
    standin.execute(f"INSERT INTO {mssql_table} ([sid], [session], [expires]) "
                    "VALUES (N'r', N'x', GETUTCDATE())")
    port = standin.port
    conn = standin.connect(autocommit=True)
    standin.stop()
    assert not standin.running
    with pytest.raises(pymssql.OperationalError):
        conn.cursor().execute("SELECT 1")
    conn.close()
    with pytest.raises(pymssql.OperationalError):
        standin.connect(login_timeout=2)
    standin.start()
    assert standin.port == port
    assert _one(standin, f"SELECT [sid] FROM {mssql_table}") == ("r",)


def test_stop_rolls_back_open_transactions(standin: SQLServerStandIn, mssql_table: str) -> None:
    conn = standin.connect()
    conn.cursor().execute(f"INSERT INTO {mssql_table} ([sid], [session], [expires]) "
                          "VALUES (N's', N'x', GETUTCDATE())")
    standin.stop()
    standin.start()
    conn.close()
    assert standin.execute(f"SELECT COUNT(*) FROM {mssql_table}") == [(0,)]


def test_repr_masks_the_password_and_url_carries_it(mssql_server: Any) -> None:
    server = SQLServerStandIn(password="Very$ecret1")
    assert "Very$ecret1" not in repr(server) and "Very$ecret1" not in str(server)
    assert "***" in repr(server)
    server.start()
    try:
        assert server.url == f"mssql://sa:Very%24ecret1@127.0.0.1:{server.port}/test"
        assert _one(server, "SELECT 1") == (1,)
    finally:
        server.close()


def test_generated_passwords_differ() -> None:
    assert SQLServerStandIn().password != SQLServerStandIn().password


def test_context_manager_closes(mssql_server: Any) -> None:
    with SQLServerStandIn() as server:
        port = server.port
        assert server.running
    assert not server.running
    with pytest.raises(pymssql.OperationalError):
        pymssql.connect(server="127.0.0.1", port=str(port), user="sa", password=server.password,
                        login_timeout=2)


def test_data_file_persists_across_servers(tmp_path: Path, mssql_server: Any) -> None:
    data = tmp_path / "standin.json"
    with SQLServerStandIn(data_file=str(data)) as server:
        server.execute("CREATE TABLE [dbo].[kept] ([k] nvarchar(10) NOT NULL PRIMARY KEY)")
        _one(server, "INSERT INTO [dbo].[kept] ([k]) VALUES (N'yes'); SELECT 1")
    assert data.exists()
    with SQLServerStandIn(data_file=str(data)) as server:
        assert _one(server, "SELECT [k] FROM [dbo].[kept]") == ("yes",)


def test_run_standin_prints_the_url_once_and_stops(capsys: Any) -> None:
    stop = threading.Event()
    servers: list[SQLServerStandIn] = []
    ready = threading.Event()

    def on_ready(server: SQLServerStandIn) -> None:
        servers.append(server)
        ready.set()

    thread = threading.Thread(target=run_standin, kwargs={"port": 0, "password": "Pw-123456",
                                                          "ready": on_ready, "stop_event": stop})
    thread.start()
    try:
        assert ready.wait(10)
        assert _one(servers[0], "SELECT 1") == (1,)
    finally:
        stop.set()
        thread.join(10)
    out = capsys.readouterr().out
    assert out == f"mssql://sa:Pw-123456@127.0.0.1:{servers[0].port}/test\n"
    assert not servers[0].running


def test_run_standin_stops_on_sigterm(tmp_path: Path) -> None:
    code = ("from beaker_mssql.testing import run_standin\n"
            "raise SystemExit(run_standin(port=0, password='Pw-1'))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("mssql://sa:Pw-1@127.0.0.1:")
        server = RealServer(url)
        assert server.execute("SELECT 1") == [(1,)]
        proc.terminate()
        assert proc.wait(20) == 0
    finally:
        proc.kill()


# -- RealServer and the pytest plugin ---------------------------------------------------------------


def test_real_server_wrapper_against_the_standin(standin: SQLServerStandIn) -> None:
    real = RealServer(standin.url)
    assert (real.host, real.port, real.user, real.password, real.database) == (
        standin.host, standin.port, standin.user, standin.password, standin.database)
    assert not real.is_standin and standin.is_standin
    assert real.execute("SELECT 1; SELECT 2") == [(1,), (2,)]
    assert standin.password not in repr(real)
    with pytest.raises(ValueError):
        RealServer("postgres://x@y/z")


def test_mssql_table_fixture(mssql_table: str, mssql_server: Any) -> None:
    assert mssql_table.startswith("[dbo].[t_")
    mssql_server.execute(f"INSERT INTO {mssql_table} ([sid], [session], [expires]) "
                         "VALUES (N'a', N'b', GETUTCDATE())")
    assert mssql_server.execute(f"SELECT [sid], [session] FROM {mssql_table}") == [("a", "b")]


def test_mssql_url_fixture(mssql_url: str, mssql_server: Any) -> None:
    assert mssql_url == mssql_server.url and mssql_url.startswith("mssql://")


PLUGIN_TEST = textwrap.dedent('''
    import pytest

    def test_url(mssql_url, mssql_server):
        assert mssql_url.startswith("mssql://")
        assert mssql_server.execute("SELECT 1") == [(1,)]

    def test_table(mssql_table, mssql_server):
        assert mssql_server.execute(f"SELECT COUNT(*) FROM {mssql_table}") == [(0,)]

    def test_needs_standin(standin):
        standin.clock.advance(10)

    @pytest.mark.standin_only
    def test_marked():
        pass
''')


def test_plugin_fixtures_against_a_real_server_url(pytester: pytest.Pytester, standin: SQLServerStandIn,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # The stand-in plays the "real" server: the fixtures must switch to RealServer and skip the rest.
    pytester.makepyfile(test_plugin_user=PLUGIN_TEST)
    monkeypatch.setenv("BEAKER_MSSQL_TEST_URL", standin.url)
    result = pytester.runpytest_inprocess("-q", "-rs", "-p", "no:cacheprovider", "-p", "no:hypothesispytest")
    result.assert_outcomes(passed=2, skipped=2)
    result.stdout.fnmatch_lines(["*BEAKER_MSSQL_TEST_URL points at a real server*"])
    assert standin.password not in result.stdout.str()


def test_plugin_fixtures_with_the_standin(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_plugin_user=PLUGIN_TEST)
    monkeypatch.delenv("BEAKER_MSSQL_TEST_URL", raising=False)
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest")
    result.assert_outcomes(passed=4)
