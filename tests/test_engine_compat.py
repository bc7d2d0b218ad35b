"""The package on every engine it claims (issue 9) and racing first requests (issue 16, item 1).

Two kinds of tests:

* "reproductions" start one stand-in per profile and show each Babelfish bug of issue 9 on the
  ``babelfish`` profile -- the old code's behaviour fails there -- and the fixed package working on all
  three profiles, whatever profile the run uses;
* the rest run on the run's own server (``make test`` runs the suite once per profile; with
  ``BEAKER_MSSQL_TEST_URL`` on the real server): create_table started twice, run from threads and from
  two processes at once, the fleet sweeper across two processes (creation locks without waiting:
  tests/test_beaker_cache.py::test_creation_lock_across_managers).

Nothing waits on a clock: threads meet at barriers, child processes wait for a line on stdin.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pymssql
import pytest
from engine_tools import one_standin_per_profile
from helpers import run_threads, wait_until

from beaker_mssql import MSSQLStore
from beaker_mssql import store as store_module
from beaker_mssql.config import TableName, parse_table_name, quote_identifier
from beaker_mssql.errors import (
    DatabaseError,
    TableMissingError,
    sqlserver_equivalent,
)
from beaker_mssql.sql import create_table_sql, drop_table_sql, index_name
from beaker_mssql.sweeper import SWEEP_LOCK, Sweeper
from beaker_mssql.testing import SQLServerStandIn
from beaker_mssql.testing.profiles import PROFILES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- reproductions, one stand-in per profile --------------------------------------------------------------


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, SQLServerStandIn]]:
    with one_standin_per_profile() as started:
        yield started


@pytest.fixture(params=sorted(PROFILES))
def server(request: pytest.FixtureRequest, servers: dict[str, SQLServerStandIn]) -> SQLServerStandIn:
    return servers[request.param]


@pytest.fixture
def fresh(server: SQLServerStandIn) -> Iterator[TableName]:
    table = TableName("dbo", "c_" + uuid.uuid4().hex[:10])
    yield table
    server.execute(drop_table_sql(table))


def old_create_table_sql(table: TableName) -> str:
    """The DDL before the fix: the index looked up by name with INDEXPROPERTY."""
    obj = "N'" + table.quoted + "'"
    ix = index_name(table)
    return (
        f"IF OBJECT_ID({obj}, N'U') IS NULL CREATE TABLE {table.quoted} ([sid] nvarchar(255) NOT NULL "
        "PRIMARY KEY, [session] nvarchar(max) NOT NULL, [expires] datetime NOT NULL);\n"
        f"IF INDEXPROPERTY(OBJECT_ID({obj}), N'{ix}', 'IndexID') IS NULL\n"
        f"    CREATE INDEX {quote_identifier(ix)} ON {table.quoted} ([expires]);\n"
    )


def run_sql(server: Any, sql: str) -> None:
    conn = server.connect(autocommit=True)
    try:
        conn.cursor().execute(sql)
    finally:
        conn.close()


@pytest.mark.standin_only
def test_bug1_old_ddl_fails_its_second_run_on_babelfish_the_new_one_never(
    server: SQLServerStandIn, fresh: TableName
) -> None:
    old = old_create_table_sql(fresh)
    run_sql(server, old)
    if server.profile.name == "babelfish":
        with pytest.raises(pymssql.Error) as info:
            run_sql(server, old)  # INDEXPROPERTY finds nothing: CREATE INDEX again
        assert info.value.args[0] == 2714
    else:
        run_sql(server, old)
    new = create_table_sql(fresh)
    run_sql(server, new)
    run_sql(server, new)
    indexes = server.execute(
        f"SELECT COUNT(*) FROM sys.indexes WHERE object_id = OBJECT_ID(N'{fresh.quoted}') "
        "AND is_primary_key = 0 AND name IS NOT NULL")
    assert indexes == [(1,)]  # the old run's index was recognised by its column: no second one
    with MSSQLStore(url=server.url, table=fresh.quoted) as store:
        assert store.check_table() == []


@pytest.mark.standin_only
def test_bug1_an_expires_index_of_another_name_is_kept(server: SQLServerStandIn, fresh: TableName) -> None:
    """connect-mssql-v2 users may have indexed expires under a name of their own: found by column."""
    server.execute(
        f"CREATE TABLE {fresh.quoted} ([sid] nvarchar(255) NOT NULL PRIMARY KEY, [session] nvarchar(max) "
        f"NOT NULL, [expires] datetime NOT NULL); CREATE INDEX [my_expiry] ON {fresh.quoted} ([expires])")
    with MSSQLStore(url=server.url, table=fresh.quoted, create_table=True) as store:
        store.set("abc", "x")
        assert store.check_table() == []
    count = server.execute(f"SELECT COUNT(*) FROM sys.indexes WHERE object_id = OBJECT_ID(N'{fresh.quoted}') "
                           "AND is_primary_key = 0 AND name IS NOT NULL")
    assert count == [(1,)]


@pytest.mark.standin_only
def test_check_table_misses_an_index_that_does_not_start_with_expires(
    server: SQLServerStandIn, fresh: TableName
) -> None:
    server.execute(
        f"CREATE TABLE {fresh.quoted} ([sid] nvarchar(255) NOT NULL PRIMARY KEY, [session] nvarchar(max) "
        f"NOT NULL, [expires] datetime NOT NULL); "
        f"CREATE INDEX [ix_other] ON {fresh.quoted} ([sid], [expires])")
    with MSSQLStore(url=server.url, table=fresh.quoted) as store:
        assert store.check_table() == ["no index on [expires] (expiry sweeps will scan the table)"]


@pytest.mark.standin_only
def test_bug2_nowait_applock_is_not_granted_never_an_error(
    server: SQLServerStandIn, fresh: TableName
) -> None:
    run_sql(server, create_table_sql(fresh))
    with MSSQLStore(url=server.url, table=fresh.quoted) as a, \
            MSSQLStore(url=server.url, table=fresh.quoted) as b:
        held = a.acquire_applock("bug2")
        assert held is not None
        got: list[Any] = []
        thread = threading.Thread(target=lambda: got.append(b.acquire_applock("bug2", timeout_ms=0)))
        thread.start()
        thread.join()
        assert got == [None]  # Babelfish's -999 included
        held.release()
        again = b.acquire_applock("bug2", timeout_ms=0)
        assert again is not None
        again.release()


@pytest.mark.standin_only
def test_bug3_errors_classified_on_every_engine(server: SQLServerStandIn, fresh: TableName) -> None:
    with MSSQLStore(url=server.url, table=fresh.quoted) as store:
        with pytest.raises(TableMissingError) as missing:
            store.get("abc")
    text = str(missing.value)
    assert "beaker-mssql create-table" in text and "create_table = true" in text
    if server.profile.name == "babelfish":
        assert "error 33557097" in text and f'relation "test_dbo.{fresh.name}" does not exist' in text
    else:
        assert "(SQL Server error 208)" in text
    # too long a value: a [session] column narrower than the package's nvarchar(max)
    server.execute(f"CREATE TABLE {fresh.quoted} ([sid] nvarchar(255) NOT NULL PRIMARY KEY, "
                   "[session] nvarchar(10) NOT NULL, [expires] datetime NOT NULL)")
    with MSSQLStore(url=server.url, table=fresh.quoted, retries=0) as store:
        with pytest.raises(DatabaseError) as too_long:
            store.set("abc", "x" * 20)
    assert sqlserver_equivalent(too_long.value.number, str(too_long.value)) == 2628
    if server.profile.name == "babelfish":
        expected = "33557097 (SQL Server's 2628): value too long for type character varying(10)"
        assert expected in str(too_long.value)
    else:
        assert "error 2628: String or binary data would be truncated" in str(too_long.value)
    # A login to a database that does not exist, in a child process (pymssql would report Babelfish's
    # 911 for every later failed login of this one: README "Login error numbers from pymssql").
    url = server.url.rsplit("/", 1)[0] + "/no_such_db"
    login = subprocess.run([sys.executable, "-c", LOGIN_CHILD], capture_output=True, text=True, timeout=60,
                           check=True, env=dict(os.environ, CHILD_URL=url)).stdout
    assert login.startswith("ConnectionFailedError ") and "no_such_db" in login
    assert "Hint: check the database name" in login  # 911 on Babelfish reads like 4060
    assert server.password not in login


LOGIN_CHILD = """
import os
from beaker_mssql import MSSQLStore
from beaker_mssql.errors import MSSQLStoreError
try:
    with MSSQLStore(url=os.environ["CHILD_URL"], login_timeout=5) as store:
        store.get("abc")
except MSSQLStoreError as exc:
    print(type(exc).__name__, exc)
"""


def test_sqlserver_equivalent_is_the_one_classification() -> None:
    babelfish = 33557097
    assert sqlserver_equivalent(babelfish, 'relation "app_dbo.sessions" does not exist') == 208
    assert sqlserver_equivalent(babelfish, "value too long for type character varying(255)") == 2628
    assert sqlserver_equivalent(babelfish, 'relation "ix_x" already exists') == 2714
    assert sqlserver_equivalent(babelfish, "division by zero") == babelfish
    assert sqlserver_equivalent(911, "Database 'x' does not exist.", login=True) == 4060
    assert sqlserver_equivalent(911, "Database 'x' does not exist.") == 911  # USE x: not a login error
    assert sqlserver_equivalent(208, "Invalid object name 'x'.") == 208
    assert sqlserver_equivalent(None, "") is None


@pytest.mark.standin_only
def test_bug4_sweep_job_script_has_no_create_or_alter(server: SQLServerStandIn) -> None:
    with open(os.path.join(ROOT, "sql", "sweep_job.sql"), encoding="utf-8") as f:
        script = f.read()
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("--"))
    assert "CREATE OR ALTER" not in code.upper()
    old = "CREATE OR ALTER PROCEDURE [dbo].[beaker_mssql_sweep] AS BEGIN SELECT 1; END"
    with pytest.raises(pymssql.Error) as info:
        run_sql(server, old)
    text = info.value.args[1].decode()
    if server.profile.name == "babelfish":
        assert info.value.args[0] == 102 and '"ALTER"' in text  # what Babelfish says (syntax error at ALTER)
    else:
        assert "does not support" in text  # the stand-in has no procedures


# -- on the run's server: create_table races --------------------------------------------------------------


@pytest.fixture
def new_tables(mssql_server: Any) -> Iterator[list[TableName]]:
    tables: list[TableName] = []
    yield tables
    for table in tables:
        mssql_server.execute(drop_table_sql(table))


def make_table_name(tables: list[TableName]) -> TableName:
    table = TableName("dbo", "r_" + uuid.uuid4().hex[:10])
    tables.append(table)
    return table


def test_second_start_with_create_table(mssql_url: str, new_tables: list[TableName],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    table = make_table_name(new_tables)
    with MSSQLStore(url=mssql_url, table=table.quoted, create_table=True) as first:
        first.set("abc", "1")
    monkeypatch.setattr(store_module, "_created_tables", set())  # a new process: nothing created yet
    with MSSQLStore(url=mssql_url, table=table.quoted, create_table=True) as second:
        assert second.get("abc") == "1"
        second.create_table()  # and once more, explicitly
        assert second.check_table() == []


def test_first_requests_from_threads_all_succeed(mssql_url: str, new_tables: list[TableName],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """8 threads x 4 fresh tables, each thread with a store of its own, first requests at once."""
    monkeypatch.setattr(store_module, "_created_tables", set())
    tables = [make_table_name(new_tables) for _ in range(4)]
    barrier = threading.Barrier(8)

    def first_request(i: int) -> None:
        stores = [MSSQLStore(url=mssql_url, table=t.quoted, create_table=True, pool_size=1) for t in tables]
        try:
            barrier.wait(30)
            for store in stores:
                store.set(f"thread-{i}", str(i))
        finally:
            for store in stores:
                store.close()

    assert run_threads(first_request, 8) == []
    for table in tables:
        with MSSQLStore(url=mssql_url, table=table.quoted) as store:
            assert store.length() == 8 and store.check_table() == []


def test_ddl_from_many_connections_at_once_is_serialised(
    mssql_server: Any, new_tables: list[TableName]
) -> None:
    """The server side of the race, without the store's per-process lock: the DDL's own app lock."""
    table = make_table_name(new_tables)
    ddl = create_table_sql(table)
    barrier = threading.Barrier(6)

    def create(_: int) -> None:
        conn = mssql_server.connect(autocommit=True)
        try:
            barrier.wait(30)
            conn.cursor().execute(ddl)
        finally:
            conn.close()

    assert run_threads(create, 6) == []
    with MSSQLStore(url=mssql_server.url, table=table.quoted) as store:
        assert store.check_table() == []


CHILD = r"""
import os, sys
from beaker_mssql import MSSQLStore
from beaker_mssql.sweeper import SWEEP_LOCK, Sweeper
errors = []
store = MSSQLStore(url=os.environ["CHILD_URL"], table=os.environ["CHILD_TABLE"],
                   create_table=os.environ["CHILD_ROLE"] == "create",
                   auto_remove_callback=lambda error, n: errors.append(error))
role = os.environ["CHILD_ROLE"]
print("ready", flush=True)
sys.stdin.readline()
if role == "create":
    store.set(os.environ["CHILD_SID"], "child")
    print("ok", store.get(os.environ["CHILD_SID"]), flush=True)
elif role == "hold":
    lock = store.acquire_applock(SWEEP_LOCK)
    print("held" if lock is not None else "not granted", flush=True)
    sys.stdin.readline()
    lock.release()
    print("released", flush=True)
else:
    print("swept", Sweeper(store, start=False).run_once(), errors, flush=True)
store.close()
"""


def start_child(url: str, table: TableName, role: str, sid: str = "") -> subprocess.Popen[str]:
    env = dict(os.environ, CHILD_URL=url, CHILD_TABLE=table.quoted, CHILD_ROLE=role, CHILD_SID=sid)
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == "ready\n", line + (proc.stderr.read() if proc.stderr else "")
    return proc


def tell(proc: subprocess.Popen[str]) -> str:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    return proc.stdout.readline()


def finish(proc: subprocess.Popen[str]) -> None:
    try:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_first_requests_from_two_processes_both_succeed(mssql_url: str, new_tables: list[TableName]) -> None:
    table = make_table_name(new_tables)
    children = [start_child(mssql_url, table, "create", f"proc-{i}") for i in range(2)]
    try:
        for proc in children:  # both are past their imports and connected to nothing yet: go
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        answers = [proc.stdout.readline() if proc.stdout else "" for proc in children]
    finally:
        for proc in children:
            finish(proc)
    assert answers == ["ok child\n", "ok child\n"]
    with MSSQLStore(url=mssql_url, table=table.quoted) as store:
        assert store.length() == 2 and store.check_table() == []


def test_fleet_sweeper_across_two_processes(mssql_server: Any, mssql_url: str, mssql_table: str) -> None:
    table = parse_table_name(mssql_table)
    mssql_server.execute(
        f"INSERT INTO {mssql_table} ([sid], [session], [expires]) VALUES "
        "(N'old1', N'x', DATEADD(second, -5, GETUTCDATE())), "
        "(N'old2', N'x', DATEADD(second, -5, GETUTCDATE()))")
    errors: list[Any] = []
    with MSSQLStore(url=mssql_url, table=mssql_table,
                    auto_remove_callback=lambda error, n: errors.append(error)) as store:
        holder = start_child(mssql_url, table, "hold")
        try:
            assert tell(holder) == "held\n"
            assert Sweeper(store, start=False).run_once() is None  # the other process sweeps: skipped
            assert errors == [None]  # skipped, not failed (Babelfish answers -999 here)
            assert tell(holder) == "released\n"
        finally:
            finish(holder)
        lock = store.acquire_applock(SWEEP_LOCK)
        assert lock is not None
        try:
            sweeper = start_child(mssql_url, table, "sweep")
            try:
                assert tell(sweeper) == "swept None [None]\n"
            finally:
                finish(sweeper)
        finally:
            lock.release()
        assert Sweeper(store, start=False).run_once() == 2


@pytest.mark.standin_only
def test_session_read_during_an_open_write_waits_only_without_rcsi(standin: Any, mssql_table: str) -> None:
    """store.get while another connection's transaction has changed the row: under READ_COMMITTED_SNAPSHOT
    (azure, babelfish) it returns the committed row at once; under locking READ COMMITTED (sqlserver) it
    waits for the writer's commit and then returns the new row."""
    with MSSQLStore(url=standin.url, table=mssql_table) as store:
        store.set("rcsi", "committed")
        writer = standin.connect()  # autocommit off: the UPDATE's transaction stays open
        got: list[Any] = []
        reader = threading.Thread(target=lambda: got.append(store.get("rcsi")))
        try:
            update = f"UPDATE {mssql_table} SET [session] = N'uncommitted' WHERE [sid] = N'rcsi'"
            writer.cursor().execute(update)
            reader.start()
            if standin.profile.read_committed_snapshot:
                reader.join(60)
                assert got == ["committed"]  # returned while the writer's transaction is still open
                writer.commit()
            else:
                # the reader's statement waits for the writer's key lock
                assert wait_until(lambda: bool(standin.engine.locks.waits), timeout=30)
                assert got == []
                writer.commit()
                reader.join(60)
                assert got == ["uncommitted"]
        finally:
            writer.close()
            reader.join(60)
        assert store.get("rcsi") == "uncommitted"


def test_create_table_failure_carries_the_servers_text(mssql_url: str) -> None:
    """Not 'SQL Server error 2760: 2760': the number and what the server said."""
    schema = "no_schema_" + uuid.uuid4().hex[:6]
    with MSSQLStore(url=mssql_url, table=f"[{schema}].[t]", create_table=True) as store:
        with pytest.raises(DatabaseError) as info:
            store.get("abc")
    text = str(info.value)
    assert text.startswith(f"create_table on [{schema}].[t] failed: SQL Server error ")
    assert schema in text.split("failed: ", 1)[1]  # the server's own words name the schema
    assert "DB-Lib error message" not in text
