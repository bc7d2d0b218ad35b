"""The real pymssql 2.4.x against the stand-in over TCP: login, types, packets, errors, cancellation."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from typing import Any

import pymssql
import pytest
from helpers import run_threads, wait_until
from standin_raw import RawClient, is_attention_ack

from beaker_mssql.errors import sqlserver_equivalent
from beaker_mssql.testing import SQLServerStandIn, login, tds

pytestmark = pytest.mark.standin_only


# -- login ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [None, "7.2", "7.3", "7.4"])
def test_login_and_select_with_each_tds_version(standin: SQLServerStandIn, version: str | None) -> None:
    kwargs = {} if version is None else {"tds_version": version}
    conn = standin.connect(**kwargs)
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT 1")
        assert cursor.fetchall() == [(1,)]
        assert conn._conn.tds_version == float(version or "7.4")
        cursor.execute("SELECT @@SPID")
        (spid,) = cursor.fetchone()
    finally:
        conn.close()
    per = standin.stats()["per_connection"][spid]
    assert per["tds_version"] == {"7.2": "0x72090002", "7.3": "0x730B0003"}.get(version or "", "0x74000004")
    assert per["app_name"].startswith("pymssql")


@pytest.mark.parametrize("encryption", ["off", "request"])
def test_encryption_off_and_request_log_in_without_tls(standin: SQLServerStandIn, encryption: str) -> None:
    with standin.connect(encryption=encryption, autocommit=True) as conn:
        cursor = conn.cursor()
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)


def test_encryption_require_is_refused(standin: SQLServerStandIn) -> None:
    with pytest.raises(pymssql.OperationalError):
        standin.connect(encryption="require", login_timeout=5)
    assert standin.stats()["logins"] == 0


def test_wrong_password_is_login_failed_18456(standin: SQLServerStandIn) -> None:
    with pytest.raises(pymssql.OperationalError) as info:
        standin.connect(password="not-" + standin.password, login_timeout=5)
    # pymssql's number for a failed connect() is unreliable in a long-lived process (README): count here.
    assert standin.password not in str(info.value)
    stats = standin.stats()
    assert (stats["logins"], stats["login_failures"], stats["last_login_error"]) == (0, 1, 18456)


def test_unknown_user_is_refused(standin: SQLServerStandIn) -> None:
    with pytest.raises(pymssql.OperationalError):
        standin.connect(user="nobody", login_timeout=5)
    assert standin.stats()["last_login_error"] == 18456


def test_unknown_database_is_4060(standin: SQLServerStandIn) -> None:
    with pytest.raises(pymssql.OperationalError):
        standin.connect(database="no_such_db", login_timeout=5)
    # 4060 on SQL Server and Azure SQL; Babelfish answers 911 (profile data)
    assert standin.stats()["last_login_error"] == standin.profile.missing_database_error


FRESH_CONNECT = """
import pymssql, sys
try:
    pymssql.connect(server=sys.argv[1], port=sys.argv[2], user=sys.argv[3], password=sys.argv[4],
                    database=sys.argv[5], login_timeout=5)
except pymssql.OperationalError as e:
    print(e.args[0][0]); print(e.args[0][1].decode())
"""


@pytest.mark.parametrize("case, number, text", [
    ("password", 18456, "Login failed for user 'sa'."),
    ("database", 4060, 'Cannot open database "no_such_db" requested by the login. The login failed.'),
    ("refused", 40613, "Database 'test' on server 'STANDIN' is not currently available."),
])
def test_login_error_numbers_seen_by_a_fresh_pymssql(standin: SQLServerStandIn, case: str, number: int,
                                                     text: str) -> None:
    # pymssql keeps a failed connect()'s message in a process global (see README): ask a fresh interpreter.
    password = "wrong" if case == "password" else standin.password
    database = "no_such_db" if case == "database" else standin.database
    if case == "refused":
        standin.faults.refuse_logins(times=1, number=40613)
    if case == "database" and standin.profile.missing_database_error == 911:  # Babelfish (profile data)
        number, text = 911, "Database 'no_such_db' does not exist."
    out = subprocess.run([sys.executable, "-c", FRESH_CONNECT, standin.host, str(standin.port), standin.user,
                          password, database], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.splitlines()[0] == str(number)
    assert text in out


def test_additional_users(mssql_server: Any) -> None:
    with SQLServerStandIn(users={"app": "app-secret"}) as server:
        with server.connect(user="app", password="app-secret", autocommit=True) as conn:
            cursor = conn.cursor()
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)
        with pytest.raises(pymssql.OperationalError):
            server.connect(user="app", password="wrong", login_timeout=5)


def test_login_reply_token_sequence(standin: SQLServerStandIn) -> None:
    raw = RawClient(standin)
    try:
        reply = raw.login_reply
        assert raw.logged_in
        assert reply.index(bytes((tds.TOKEN_LOGINACK,))) > reply.index(tds.COLLATION)
        assert "Changed database context to 'test'.".encode("utf-16-le") in reply
        assert "Changed language setting to us_english.".encode("utf-16-le") in reply
        assert login.loginack(tds.TDS74) in reply
        assert reply.endswith(tds.done())
    finally:
        raw.close()


# -- packets ---------------------------------------------------------------------------------------------


def test_multi_packet_request_and_response(standin: SQLServerStandIn) -> None:
    text = "ab'c" * 20000  # 80k characters: a 160 kB batch, many 4 kB packets each way
    literal = text.replace("'", "''")
    with standin.connect(autocommit=True) as conn:
        cursor = conn.cursor()
        cursor.execute(f"SELECT N'{literal}' AS [v]")
        assert cursor.fetchone() == (text,)
        cursor.execute("SELECT @@SPID")
        (spid,) = cursor.fetchone()
    per = standin.stats()["per_connection"][spid]
    assert per["bytes_in"] > 160_000 and per["bytes_out"] > 160_000


def test_ten_megabyte_nvarchar_max_round_trips(standin: SQLServerStandIn, mssql_table: str) -> None:
    value = ("0123456789abcdeé" * (10 * 1024 * 1024 // 16))[: 10 * 1024 * 1024]
    with standin.connect(autocommit=True) as conn:
        cursor = conn.cursor()
        cursor.execute(f"INSERT INTO {mssql_table} ([sid], [session], [expires]) "
                       "VALUES (%s, %s, GETUTCDATE())", ("big", value))
        cursor.execute(f"SELECT [session] FROM {mssql_table} WHERE [sid] = N'big'")
        (back,) = cursor.fetchone()
    assert len(back) == len(value) and back == value


def test_packet_size_negotiated_from_login(standin: SQLServerStandIn) -> None:
    raw = RawClient(standin)
    try:
        assert tds.envchange_text(tds.ENV_PACKET_SIZE, "4096", "4096") in raw.login_reply
    finally:
        raw.close()


# -- result sets ------------------------------------------------------------------------------------


def test_every_type_and_null_round_trips(standin: SQLServerStandIn) -> None:
    table = "[dbo].[wire_types]"
    standin.execute(f"IF OBJECT_ID(N'{table}', N'U') IS NOT NULL DROP TABLE {table};")
    standin.execute(
        f"CREATE TABLE {table} ([id] int NOT NULL PRIMARY KEY, [i] int NULL, [b] bigint NULL, [f] bit NULL, "
        "[fl] float NULL, [s] nvarchar(50) NULL, [m] nvarchar(max) NULL, [vb] varbinary(max) NULL, "
        "[d] datetime NULL)")
    try:
        with standin.connect(autocommit=True) as conn:
            cursor = conn.cursor()
            cursor.execute(
                f"INSERT INTO {table} ([id], [i], [b], [f], [fl], [s], [m], [vb], [d]) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (1, -2147483648, 9007199254740993, True, 1.5, "héllo ☃", "m" * 5000, b"\x00\xff" * 3,
                 datetime(2024, 2, 29, 13, 45, 6, 123000)))
            assert cursor.rowcount == 1
            cursor.execute(f"INSERT INTO {table} ([id]) VALUES (2)")
            cursor.execute(f"SELECT [id], [i], [b], [f], [fl], [s], [m], [vb], [d] FROM {table} "
                           "ORDER BY [id]")
            rows = cursor.fetchall()
            names = [d[0] for d in cursor.description]
            kinds = [d[1] for d in cursor.description]
    finally:
        standin.execute(f"DROP TABLE {table}")
    assert rows[0] == (1, -2147483648, 9007199254740993, True, 1.5, "héllo ☃", "m" * 5000, b"\x00\xff" * 3,
                       datetime(2024, 2, 29, 13, 45, 6, 123000))
    assert rows[1] == (2, None, None, None, None, None, None, None, None)
    assert names == ["id", "i", "b", "f", "fl", "s", "m", "vb", "d"]
    assert kinds[0] == pymssql.NUMBER and kinds[5] == pymssql.STRING and kinds[7] == pymssql.BINARY
    assert kinds[8] == pymssql.DATETIME


@pytest.mark.engine_needs("merge")
def test_rowcount_for_select_insert_update_delete(standin: SQLServerStandIn, mssql_table: str) -> None:
    with standin.connect(autocommit=True) as conn:
        cursor = conn.cursor()
        for sid in ("a", "b", "c"):
            cursor.execute(f"INSERT INTO {mssql_table} ([sid], [session], [expires]) "
                           "VALUES (%s, N'x', GETUTCDATE())", (sid,))
            assert cursor.rowcount == 1
        cursor.execute(f"UPDATE {mssql_table} SET [session] = N'y' WHERE [sid] IN (N'a', N'b')")
        assert cursor.rowcount == 2
        cursor.execute(f"UPDATE {mssql_table} SET [session] = N'y' WHERE [sid] = N'zz'")
        assert cursor.rowcount == 0
        cursor.execute(f"SELECT [sid] FROM {mssql_table} ORDER BY [sid]")
        assert cursor.fetchall() == [("a",), ("b",), ("c",)]
        assert cursor.rowcount == 3
        for sid in ("a", "m"):  # one update, one insert
            cursor.execute(
                f"MERGE {mssql_table} WITH (HOLDLOCK) AS t USING (SELECT %s AS [sid]) AS s "
                "ON t.[sid] = s.[sid] WHEN MATCHED THEN UPDATE SET t.[session] = N'merged' "
                "WHEN NOT MATCHED THEN INSERT ([sid], [session], [expires]) "
                "VALUES (s.[sid], N'merged', GETUTCDATE());", (sid,))
            assert cursor.rowcount == 1
        cursor.execute(f"DELETE FROM {mssql_table} WHERE [sid] <> N'a'")
        assert cursor.rowcount == 3


def test_nocount_hides_the_row_count(standin: SQLServerStandIn, mssql_table: str) -> None:
    with standin.connect(autocommit=True) as conn:
        cursor = conn.cursor()
        cursor.execute(f"SET NOCOUNT ON; INSERT INTO {mssql_table} ([sid], [session], [expires]) "
                       "VALUES (N'n', N'x', GETUTCDATE()); SET NOCOUNT OFF;")
        assert cursor.rowcount == -1
        cursor.execute(f"SELECT COUNT(*) FROM {mssql_table}")
        assert cursor.fetchone() == (1,)


def test_several_result_sets_in_one_batch(standin: SQLServerStandIn) -> None:
    with standin.connect(autocommit=True) as conn:
        cursor = conn.cursor()
        cursor.execute("SELECT 1 AS [a]; SELECT N'two' AS [b], 3 AS [c]; SELECT 4 AS [d]")
        assert cursor.fetchall() == [(1,)]
        assert cursor.nextset()
        assert cursor.fetchall() == [("two", 3)]
        assert [d[0] for d in cursor.description] == ["b", "c"]
        assert cursor.nextset()
        assert cursor.fetchall() == [(4,)]
        assert not cursor.nextset()


def test_use_database_changes_context(standin: SQLServerStandIn) -> None:
    with standin.connect(autocommit=True) as conn:
        cursor = conn.cursor()
        cursor.execute("USE [master]; SELECT DB_NAME()")
        assert cursor.fetchone() == ("master",)
        cursor.execute("USE [test]; SELECT DB_NAME()")
        assert cursor.fetchone() == ("test",)


# -- errors ----------------------------------------------------------------------------------------


ERROR_CLASSES = {
    102: pymssql.ProgrammingError, 156: pymssql.OperationalError, 207: pymssql.ProgrammingError,
    208: pymssql.ProgrammingError, 515: pymssql.IntegrityError, 1205: pymssql.OperationalError,
    1222: pymssql.OperationalError, 2601: pymssql.IntegrityError, 2627: pymssql.IntegrityError,
    2628: pymssql.OperationalError, 40613: pymssql.OperationalError,
}


@pytest.mark.parametrize("number", sorted(ERROR_CLASSES))
def test_injected_errors_raise_the_pymssql_class_sql_server_gets(standin: SQLServerStandIn,
                                                                 number: int) -> None:
    with standin.connect(autocommit=True) as conn:
        cursor = conn.cursor()
        standin.faults.raise_error(number, pattern=r"^SELECT 42")
        with pytest.raises(ERROR_CLASSES[number]) as info:
            cursor.execute("SELECT 42")
        assert info.value.args[0] == number
        cursor.execute("SELECT 42")  # the fault was used up; the connection still works
        assert cursor.fetchone() == (42,)


@pytest.mark.parametrize("number, sql", [
    (102, "SELECT (1"),
    (156, "SELECT * FROM WHERE"),
    (207, "SELECT [nope] FROM {t}"),
    pytest.param(208, "SELECT * FROM [dbo].[no_such_table_x]",
                 marks=pytest.mark.engine_needs("sqlserver_errors")),
    (515, "INSERT INTO {t} ([sid], [session], [expires]) VALUES (N'n', NULL, GETUTCDATE())"),
    (2627, "INSERT INTO {t} ([sid], [session], [expires]) VALUES (N'A', N'x', GETUTCDATE())"),
    pytest.param(2628, "INSERT INTO {t} ([sid], [session], [expires]) VALUES (N'" + "x" * 300 + "', N'x', "
                 "GETUTCDATE())", marks=pytest.mark.engine_needs("sqlserver_errors")),
])
def test_engine_errors_raise_the_pymssql_class_sql_server_gets(
        standin: SQLServerStandIn, mssql_table: str, number: int, sql: str) -> None:
    standin.execute(f"INSERT INTO {mssql_table} ([sid], [session], [expires]) "
                    "VALUES (N'a', N'x', GETUTCDATE())")
    with standin.connect(autocommit=True) as conn:
        cursor = conn.cursor()
        with pytest.raises(ERROR_CLASSES[number]) as info:
            cursor.execute(sql.format(t=mssql_table))
        assert info.value.args[0] == number


@pytest.mark.parametrize("number, args", [
    (201, "@Resource = N'wire', @LockOwner = N'Session'"),  # @LockMode has no default
    (1224, "@LockMode = N'Exclusive', @LockOwner = N'Session'"),  # @Resource defaults to NULL
    (8114, "N'wire', N'Exclusive', N'Session', N'soon'"),  # @LockTimeout is int
])
def test_sp_getapplock_argument_errors_reach_the_driver(standin: SQLServerStandIn, number: int,
                                                        args: str) -> None:
    with standin.connect(autocommit=True) as conn:
        cursor = conn.cursor()
        with pytest.raises(pymssql.Error) as info:
            cursor.execute(f"EXEC sp_getapplock {args}")
        assert info.value.args[0] == number
        cursor.execute("SELECT APPLOCK_MODE(N'public', N'wire', N'Session')")
        assert cursor.fetchone() == ("NoLock",)


def test_unique_index_violation_is_2601(standin: SQLServerStandIn, mssql_table: str) -> None:
    index = "UX_" + mssql_table.split("[")[-1].rstrip("]")
    standin.execute(f"CREATE UNIQUE INDEX [{index}] ON {mssql_table} ([expires])")
    with standin.connect(autocommit=True) as conn:
        cursor = conn.cursor()
        cursor.execute(f"INSERT INTO {mssql_table} ([sid], [session], [expires]) "
                       "VALUES (N'a', N'x', '2030-01-01')")
        with pytest.raises(pymssql.IntegrityError) as info:
            cursor.execute(f"INSERT INTO {mssql_table} ([sid], [session], [expires]) "
                           "VALUES (N'b', N'x', '2030-01-01')")
        assert info.value.args[0] == 2601


def test_error_after_rows_in_one_batch(standin: SQLServerStandIn) -> None:
    with standin.connect(autocommit=True) as conn:
        cursor = conn.cursor()
        # The error arrives with the second result: pymssql raises it from nextset(), where it maps
        # every server error to OperationalError (against SQL Server too).
        cursor.execute("SELECT 1; SELECT * FROM [dbo].[no_such_table_y]")
        assert cursor.fetchall() == [(1,)]
        with pytest.raises(pymssql.OperationalError) as info:
            cursor.nextset()
        # 208 (Babelfish: 33557097 'relation ... does not exist')
        assert sqlserver_equivalent(info.value.args[0], info.value.args[1].decode()) == 208
        cursor.execute("SELECT 2")
        assert cursor.fetchone() == (2,)


# -- cancellation and disconnects --------------------------------------------------------------------------


def _insert(server: SQLServerStandIn, table: str, sid: str) -> None:
    server.execute(f"INSERT INTO {table} ([sid], [session], [expires]) VALUES (N'{sid}', N'v', GETUTCDATE())")


def test_attention_cancels_a_batch_blocked_on_a_lock(standin: SQLServerStandIn, mssql_table: str) -> None:
    _insert(standin, mssql_table, "k")
    holder = standin.connect()  # autocommit off: BEGIN TRAN
    raw = RawClient(standin)
    try:
        holder.cursor().execute(f"UPDATE {mssql_table} SET [session] = N'held' WHERE [sid] = N'k'")
        stats = standin.stats()
        spid = raw.spid
        before = stats["per_connection"][spid]["requests"]
        attentions = stats["attentions"]  # pymssql's connect() sends one ATTENTION of its own
        raw.send_batch(f"UPDATE {mssql_table} SET [session] = N'raw' WHERE [sid] = N'k'")
        assert wait_until(lambda: standin.stats()["per_connection"][spid]["requests"] > before)
        # Cancel only once the batch really waits on the holder's lock (the engine's wait-for graph).
        assert wait_until(lambda: spid in standin.engine.locks.waits)
        raw.attention()
        reply = raw.read_message()
        assert is_attention_ack(reply), reply[:40]
        assert standin.stats()["attentions"] == attentions + 1
        # The connection is still usable, and the cancelled UPDATE did nothing.
        assert tds.done(tds.DONE_COUNT, 1, tds.CURCMD_SELECT) in raw.batch("SELECT 1")
    finally:
        holder.rollback()
        holder.close()
        raw.close()
    assert standin.execute(f"SELECT [session] FROM {mssql_table} WHERE [sid] = N'k'") == [("v",)]


def test_attention_after_the_batch_finished_is_still_acknowledged(standin: SQLServerStandIn) -> None:
    # pymssql sends ATTENTION when a cursor is re-used while rows are still pending.
    with standin.connect(autocommit=True) as conn:
        cursor = conn.cursor()
        attentions = standin.stats()["attentions"]  # connect() sends one of its own
        cursor.execute("SELECT 1 AS [a]; SELECT 2 AS [b]")
        assert cursor.fetchone() == (1,)
        cursor.execute("SELECT 3")
        assert cursor.fetchone() == (3,)
        assert standin.stats()["attentions"] == attentions + 1


def test_pymssql_timeout_on_a_blocked_statement(standin: SQLServerStandIn, mssql_table: str) -> None:
    _insert(standin, mssql_table, "t")
    holder = standin.connect()
    try:
        holder.cursor().execute(f"UPDATE {mssql_table} SET [session] = N'held' WHERE [sid] = N't'")
        waiter = standin.connect(timeout=1)
        with pytest.raises(pymssql.OperationalError) as info:
            waiter.cursor().execute(f"UPDATE {mssql_table} SET [session] = N'waiter' WHERE [sid] = N't'")
        assert "timed out" in str(info.value)
        waiter.close()
        # The server is not wedged: other work goes on, and the holder can still commit.
        with standin.connect(autocommit=True) as other:
            c = other.cursor()
            c.execute("SELECT 1")
            assert c.fetchone() == (1,)
        holder.commit()
    finally:
        holder.close()
    assert standin.execute(f"SELECT [session] FROM {mssql_table} WHERE [sid] = N't'") == [("held",)]


def test_client_vanishing_mid_transaction_rolls_back(standin: SQLServerStandIn, mssql_table: str) -> None:
    raw = RawClient(standin)
    reply = raw.batch(f"BEGIN TRANSACTION; INSERT INTO {mssql_table} ([sid], [session], [expires]) "
                      "VALUES (N'gone', N'x', GETUTCDATE())")
    assert bytes((tds.TOKEN_ERROR,)) not in reply
    raw.abort()
    with standin.connect(autocommit=True, timeout=5) as conn:
        cursor = conn.cursor()
        cursor.execute(f"SELECT COUNT(*) FROM {mssql_table} WHERE [sid] = N'gone'")
        assert cursor.fetchone() == (0,)


def test_pymssql_close_rolls_back_its_transaction(standin: SQLServerStandIn, mssql_table: str) -> None:
    conn = standin.connect()
    conn.cursor().execute(f"INSERT INTO {mssql_table} ([sid], [session], [expires]) "
                          "VALUES (N'p', N'x', GETUTCDATE())")
    conn.close()
    with standin.connect(autocommit=True, timeout=5) as other:
        cursor = other.cursor()
        cursor.execute(f"SELECT COUNT(*) FROM {mssql_table}")
        assert cursor.fetchone() == (0,)


def test_connections_from_many_threads(standin: SQLServerStandIn) -> None:
    def work(n: int) -> None:
        with standin.connect(autocommit=True) as conn:
            cursor = conn.cursor()
            for i in range(20):
                cursor.execute("SELECT %d", (n * 100 + i,))
                assert cursor.fetchone() == (n * 100 + i,)

    assert run_threads(work, 8) == []
    assert standin.stats()["logins"] == 8


def test_bulk_load_requests_get_a_clear_error(standin: SQLServerStandIn) -> None:
    raw = RawClient(standin)
    try:
        raw.send(tds.PKT_BULK, b"\x00" * 16)
        reply = raw.read_message()
        assert "does not support TDS packet type 7".encode("utf-16-le") in reply
        assert tds.done(tds.DONE_COUNT, 1, tds.CURCMD_SELECT) in raw.batch("SELECT 1")
    finally:
        raw.close()


def test_no_password_in_os_environment_or_logs(standin: SQLServerStandIn, caplog: Any) -> None:
    with caplog.at_level("DEBUG", logger="beaker_mssql.testing"):
        with pytest.raises(pymssql.OperationalError):
            standin.connect(password="wrong-secret", login_timeout=5)
        standin.connect(autocommit=True).close()
    assert standin.password not in caplog.text and "wrong-secret" not in caplog.text
    assert standin.password not in os.environ.get("BEAKER_MSSQL_TEST_URL", "")
