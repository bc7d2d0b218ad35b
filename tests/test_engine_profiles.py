"""The stand-in's engine profiles (beaker_mssql/testing/profiles.py), through pymssql.

Each test here starts its own stand-ins with explicit profiles, so every behaviour is checked under
every profile whatever profile the run itself uses (``make test`` runs the whole suite once per
profile as well). Blocking is shown with ``SET LOCK_TIMEOUT 0``: a read that would wait fails at once
with 1222, one that would not wait returns rows; nothing depends on timing.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymssql
import pytest
from engine_tools import one_standin_per_profile

from beaker_mssql.testing import SQLServerStandIn
from beaker_mssql.testing.profiles import (
    AZURE,
    BABELFISH,
    PROFILES,
    SQLSERVER,
    babelfish_index_name,
    detect_profile,
    get_profile,
    profiles_markdown,
)
from beaker_mssql.testing.server import RealServer

pytestmark = pytest.mark.standin_only

NAMES = sorted(PROFILES)
RCSI = {"azure", "babelfish"}


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, SQLServerStandIn]]:
    with one_standin_per_profile() as started:
        yield started


@pytest.fixture(params=NAMES)
def server(request: pytest.FixtureRequest, servers: dict[str, SQLServerStandIn]) -> SQLServerStandIn:
    return servers[request.param]


@pytest.fixture
def table(server: SQLServerStandIn) -> Iterator[str]:
    name = "p_" + uuid.uuid4().hex[:10]
    server.execute(
        f"CREATE TABLE [dbo].[{name}] ([sid] nvarchar(255) NOT NULL PRIMARY KEY, "
        f"[session] nvarchar(max) NOT NULL, [expires] datetime NOT NULL); "
        f"CREATE INDEX [IX_{name}_expires] ON [dbo].[{name}] ([expires]); "
        f"INSERT INTO [dbo].[{name}] VALUES (N'a', N'committed', DATEADD(second, 600, GETUTCDATE()))"
    )
    yield name
    server.execute(f"DROP TABLE [dbo].[{name}]")


def connect(server: SQLServerStandIn, **kwargs: Any) -> Any:
    return server.connect(autocommit=True, **kwargs)


def query(conn: Any, sql: str) -> list[tuple[Any, ...]]:
    cur = conn.cursor()
    cur.execute(sql)
    return [tuple(r) for r in cur.fetchall()] if cur.description else []


def error_of(conn: Any, sql: str) -> tuple[int, str]:
    with pytest.raises(pymssql.Error) as info:
        query(conn, sql)
    number, text = info.value.args[0], info.value.args[1]
    return int(number), text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)


# -- choosing a profile --------------------------------------------------------------------------------


def test_profiles_by_name_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert get_profile("AZURE") is AZURE and get_profile(BABELFISH) is BABELFISH
    monkeypatch.setenv("BEAKER_MSSQL_PROFILE", "babelfish")
    assert get_profile() is BABELFISH and SQLServerStandIn().profile is BABELFISH
    monkeypatch.delenv("BEAKER_MSSQL_PROFILE")
    assert get_profile() is SQLSERVER
    with pytest.raises(ValueError, match=r"unknown stand-in profile 'oracle'.*azure, babelfish, sqlserver"):
        SQLServerStandIn(profile="oracle")
    monkeypatch.setenv("BEAKER_MSSQL_PROFILE", "db2")
    with pytest.raises(ValueError, match=r"'db2' \(from \$BEAKER_MSSQL_PROFILE\)"):
        get_profile()


def test_every_deviation_names_its_source_and_every_skip_reason_its_engine() -> None:
    assert SQLSERVER.deviations == () and dict(SQLSERVER.lacks) == {}
    for profile in (AZURE, BABELFISH):
        assert profile.deviations
        for deviation in profile.deviations:
            assert "https://" in deviation.source or "measured on Babelfish 4.3" in deviation.source
        for reason in profile.lacks.values():
            assert ("Babelfish" if profile is BABELFISH else "Azure") in reason


def test_testing_readme_lists_exactly_the_profile_data() -> None:
    path = Path(__file__).resolve().parent.parent / "beaker_mssql" / "testing" / "README.md"
    readme = path.read_text("utf-8")
    listed = readme.split("<!-- BEGIN profiles_markdown -->\n", 1)[1]
    listed = listed.split("<!-- END profiles_markdown -->", 1)[0]
    assert listed == profiles_markdown()


def test_real_server_detection_recognises_each_profile(server: SQLServerStandIn) -> None:
    """The plugin's detection (@@VERSION, EngineEdition, sys.databases) run against each profile."""
    assert RealServer(server.url).profile is server.profile
    assert server.profile.name in repr(server) and server.password not in repr(server)


def test_detect_profile_from_real_server_answers() -> None:
    babelfish = "Babelfish for PostgreSQL with SQL Server Compatibility - 12.0.2000.8 ... PostgreSQL 16.4"
    assert detect_profile(babelfish, 2) is BABELFISH  # Babelfish reports EngineEdition 2 (properties.c)
    assert detect_profile("Microsoft SQL Azure (RTM) - 12.0.2000.8", 5) is AZURE
    assert detect_profile("Microsoft SQL Server 2022 (RTM) - 16.0.1000.6", 3, rcsi=True) is AZURE
    assert detect_profile("Microsoft SQL Server 2022 (RTM) - 16.0.1000.6", 3, rcsi=False) is SQLSERVER


def test_cli_standin_profile(tmp_path: Any) -> None:
    port_probe = SQLServerStandIn()  # only to borrow a free port number
    port_probe.start()
    port = port_probe.port
    port_probe.close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "beaker_mssql.cli", "standin", "--port", str(port), "--password", "Pr0file-Pw",
         "--profile", "babelfish"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip().endswith(f"@127.0.0.1:{port}/test")
        conn = pymssql.connect(server="127.0.0.1", port=str(port), user="sa", password="Pr0file-Pw",
                               database="test", login_timeout=10)
        try:
            assert query(conn, "SELECT SERVERPROPERTY('StandInProfile')") == [("babelfish",)]
        finally:
            conn.close()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    bad = subprocess.run([sys.executable, "-m", "beaker_mssql.cli", "standin", "--profile", "oracle"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "invalid choice: 'oracle'" in bad.stderr


# -- READ_COMMITTED_SNAPSHOT ---------------------------------------------------------------------------


def test_reader_blocked_by_open_writer_only_without_rcsi(server: SQLServerStandIn, table: str) -> None:
    writer, reader = connect(server), connect(server)
    try:
        query(writer, f"BEGIN TRANSACTION; UPDATE [dbo].[{table}] SET [session] = N'uncommitted' "
                      "WHERE [sid] = N'a'")
        query(reader, "SET LOCK_TIMEOUT 0")
        read = f"SELECT [session] FROM [dbo].[{table}] WHERE [sid] = N'a'"
        if server.profile.name in RCSI:
            assert query(reader, read) == [("committed",)]  # the last committed version, no wait
            assert query(reader, f"SELECT COUNT(*) FROM [dbo].[{table}]") == [(1,)]
        else:
            assert error_of(reader, read)[0] == 1222  # would wait for the writer's X lock
        query(writer, "COMMIT TRANSACTION")
        assert query(reader, read) == [("uncommitted",)]
    finally:
        writer.close()
        reader.close()


def test_rcsi_hides_uncommitted_inserts_and_deletes(servers: dict[str, SQLServerStandIn]) -> None:
    for name in sorted(RCSI):
        server = servers[name]
        t = "v_" + uuid.uuid4().hex[:8]
        server.execute(f"CREATE TABLE [dbo].[{t}] ([k] int NOT NULL PRIMARY KEY, [v] nvarchar(10) NOT NULL); "
                       f"INSERT INTO [dbo].[{t}] VALUES (1, N'one'), (2, N'two')")
        writer, reader = connect(server), connect(server)
        try:
            query(writer, f"BEGIN TRANSACTION; DELETE FROM [dbo].[{t}] WHERE [k] = 1; "
                          f"INSERT INTO [dbo].[{t}] VALUES (3, N'three'); "
                          f"UPDATE [dbo].[{t}] SET [k] = 20 WHERE [k] = 2")
            query(reader, "SET LOCK_TIMEOUT 0")
            assert sorted(query(reader, f"SELECT [k], [v] FROM [dbo].[{t}]")) == [(1, "one"), (2, "two")]
            assert query(reader, f"SELECT [v] FROM [dbo].[{t}] WHERE [k] = 2") == [("two",)]
            assert query(reader, f"SELECT [v] FROM [dbo].[{t}] WHERE [k] = 3") == []
            # the writer sees its own changes
            assert sorted(query(writer, f"SELECT [k] FROM [dbo].[{t}]")) == [(3,), (20,)]
            query(writer, "ROLLBACK TRANSACTION")
            assert sorted(query(reader, f"SELECT [k] FROM [dbo].[{t}]")) == [(1,), (2,)]
        finally:
            writer.close()
            reader.close()
            server.execute(f"DROP TABLE [dbo].[{t}]")


def test_rcsi_writers_and_locking_hints_still_lock(servers: dict[str, SQLServerStandIn]) -> None:
    """Azure SQL: UPDATE, UPDLOCK and READCOMMITTEDLOCK still wait for a writer; Babelfish ignores hints."""
    for name in ("azure", "babelfish"):
        server = servers[name]
        t = "w_" + uuid.uuid4().hex[:8]
        server.execute(f"CREATE TABLE [dbo].[{t}] ([k] int NOT NULL PRIMARY KEY, [v] int NOT NULL); "
                       f"INSERT INTO [dbo].[{t}] VALUES (1, 1)")
        writer, other = connect(server), connect(server)
        try:
            query(writer, f"BEGIN TRANSACTION; UPDATE [dbo].[{t}] SET [v] = 2 WHERE [k] = 1")
            query(other, "SET LOCK_TIMEOUT 0")
            assert error_of(other, f"UPDATE [dbo].[{t}] SET [v] = 3 WHERE [k] = 1")[0] == 1222
            for hint in ("UPDLOCK", "READCOMMITTEDLOCK"):
                read = f"SELECT [v] FROM [dbo].[{t}] WITH ({hint}) WHERE [k] = 1"
                if name == "azure":
                    assert error_of(other, read)[0] == 1222
                else:
                    assert query(other, read) == [(1,)]  # hint ignored: a plain MVCC read
        finally:
            writer.close()
            other.close()
            server.execute(f"DROP TABLE [dbo].[{t}]")


def test_updlock_serializable_range_lock_ignored_only_on_babelfish(
    server: SQLServerStandIn, table: str
) -> None:
    first, second = connect(server), connect(server)
    try:
        query(first, f"BEGIN TRANSACTION; SELECT [sid] FROM [dbo].[{table}] WITH (UPDLOCK, SERIALIZABLE) "
                     "WHERE [sid] = N'new'")
        query(second, "SET LOCK_TIMEOUT 0")
        insert = f"INSERT INTO [dbo].[{table}] VALUES (N'new', N'x', GETUTCDATE())"
        if server.profile is BABELFISH:
            query(second, insert)  # no key-range lock was taken
        else:
            assert error_of(second, insert)[0] == 1222
    finally:
        first.close()
        second.close()


# -- Babelfish's measured deviations -------------------------------------------------------------------


def test_index_catalog(server: SQLServerStandIn, table: str) -> None:
    conn = connect(server)
    try:
        prop = query(conn, f"SELECT INDEXPROPERTY(OBJECT_ID(N'[dbo].[{table}]'), N'IX_{table}_expires', "
                           "'IndexID')")
        names = query(conn, f"SELECT i.name FROM sys.indexes AS i WHERE i.object_id = OBJECT_ID(N'{table}') "
                            "AND i.is_primary_key = 0 AND i.name IS NOT NULL")
        by_column = query(conn, "SELECT COUNT(*) FROM sys.indexes AS i JOIN sys.index_columns AS ic "
                                "ON ic.object_id = i.object_id AND ic.index_id = i.index_id "
                                "JOIN sys.columns AS c "
                                "ON c.object_id = ic.object_id AND c.column_id = ic.column_id "
                                f"WHERE i.object_id = OBJECT_ID(N'{table}') AND ic.key_ordinal = 1 "
                                "AND c.name = N'expires'")
    finally:
        conn.close()
    assert by_column == [(1,)]  # the rule create_table_sql and check_table use works everywhere
    if server.profile is BABELFISH:
        assert prop == [(None,)]
        (name,), = names
        assert name == babelfish_index_name(f"IX_{table}_expires", table)
        prefix = f"ix_{table}_expires{table}"
        # name + table + md5, cut to 63 bytes (construct_unique_index_name, profiles.BABELFISH)
        assert name.startswith(prefix) and len(name) == min(63, len(prefix) + 32)
    else:
        assert prop == [(2,)] and names == [(f"IX_{table}_expires",)]


def test_nowait_applock_on_a_held_lock(server: SQLServerStandIn) -> None:
    holder, other = connect(server), connect(server)
    take = ("DECLARE @r int; EXEC @r = sp_getapplock @Resource = N'profile-test', @LockMode = N'Exclusive', "
            "@LockOwner = N'Session', @LockTimeout = {}; SELECT @r")
    try:
        assert query(holder, take.format(0)) == [(0,)]
        expected = -999 if server.profile is BABELFISH else -1
        assert query(other, take.format(0)) == [(expected,)]
        assert query(other, take.format(20)) == [(-1,)]  # with a timeout: -1 on every engine
    finally:
        holder.close()
        other.close()


FRESH_LOGIN = """
import sys
from urllib.parse import unquote, urlsplit
import pymssql
url = urlsplit(sys.argv[1])
try:
    pymssql.connect(server=url.hostname, port=str(url.port), user=unquote(url.username),
                    password=unquote(url.password), database="no_such_db", login_timeout=5)
except pymssql.OperationalError as e:
    print(e.args[0][0], e.args[0][1].decode())
"""


def test_error_numbers_and_texts(server: SQLServerStandIn, table: str) -> None:
    conn = connect(server)
    try:
        missing = error_of(conn, "SELECT [sid] FROM [dbo].[no_such_table]")
        too_long = error_of(conn, f"INSERT INTO [dbo].[{table}] VALUES (N'{'x' * 256}', N'x', GETUTCDATE())")
        assert query(conn, f"SELECT COUNT(*) FROM [dbo].[{table}]") == [(1,)]
    finally:
        conn.close()
    # In a child process: pymssql keeps the most severe login error of its process (see the README), and
    # a 911 (severity 16) here would be what every later failed login of this test run reports.
    login = subprocess.run([sys.executable, "-c", FRESH_LOGIN, server.url], capture_output=True, text=True,
                           timeout=60, check=True).stdout
    if server.profile is BABELFISH:
        assert missing[0] == 33557097 and 'relation "test_dbo.no_such_table" does not exist' in missing[1]
        assert too_long[0] == 33557097 and "value too long for type character varying(255)" in too_long[1]
        assert server.stats()["last_login_error"] == 911 and login.startswith("911 ")
    else:
        assert missing[0] == 208 and "Invalid object name 'dbo.no_such_table'" in missing[1]
        assert too_long[0] == 2628
        assert server.stats()["last_login_error"] == 4060 and login.startswith("4060 ")


def test_babelfish_unmapped_error_rolls_back_the_transaction(servers: dict[str, SQLServerStandIn]) -> None:
    """Babelfish ends the batch and rolls back on an error it reports as 33557097 (AWS documentation)."""
    for name in ("sqlserver", "babelfish"):
        conn = connect(servers[name])
        try:
            with pytest.raises(pymssql.Error):
                query(conn, "BEGIN TRANSACTION; SELECT 1 FROM [dbo].[no_such_table]")
            open_transactions = query(conn, "SELECT @@TRANCOUNT")
            query(conn, "IF @@TRANCOUNT > 0 ROLLBACK")
        finally:
            conn.close()
        assert open_transactions == [(0,)] if name == "babelfish" else [(1,)]


def test_merge_and_create_or_alter(server: SQLServerStandIn, table: str) -> None:
    conn = connect(server)
    merge = (f"MERGE [dbo].[{table}] AS t USING (VALUES (N'a')) AS s ([sid]) ON t.[sid] = s.[sid] "
             "WHEN MATCHED THEN UPDATE SET [session] = N'merged';")
    try:
        if server.profile is BABELFISH:
            number, text = error_of(conn, merge)
            assert number == 33557097 and text.startswith("'MERGE' is not currently supported in Babelfish")
            number, text = error_of(conn, "CREATE OR ALTER PROCEDURE p AS SELECT 1")
            assert number == 102 and '"ALTER"' in text
            assert query(conn, f"SELECT [session] FROM [dbo].[{table}]") == [("committed",)]
        else:
            query(conn, merge)
            assert query(conn, f"SELECT [session] FROM [dbo].[{table}]") == [("merged",)]
            number, text = error_of(conn, "CREATE OR ALTER PROCEDURE p AS SELECT 1")
            assert number == 102 and "does not support" in text  # the stand-in has no procedures at all
    finally:
        conn.close()


def test_datalength_of_nvarchar(server: SQLServerStandIn) -> None:
    conn = connect(server)
    try:
        got = query(conn, "SELECT DATALENGTH(N'abc'), DATALENGTH(N'\u00e9'), DATALENGTH('abc')")
    finally:
        conn.close()
    assert got == ([(3, 2, 3)] if server.profile is BABELFISH else [(6, 2, 3)])


PROFILE_PLUGIN_TEST = """
import pytest

def test_profile_fixture(mssql_profile, mssql_server):
    assert mssql_server.profile is mssql_profile
    print("PROFILE", mssql_profile.name)

@pytest.mark.engine_needs("merge")
def test_needs_merge(mssql_server):
    pass
"""


@pytest.mark.parametrize(("how", "name"), [("option", "babelfish"), ("env", "azure"), ("env", "sqlserver")])
def test_plugin_selects_the_profile_and_skips_with_its_reason(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, how: str, name: str
) -> None:
    pytester.makepyfile(test_profile_user=PROFILE_PLUGIN_TEST)
    monkeypatch.delenv("BEAKER_MSSQL_TEST_URL", raising=False)
    args = ["-q", "-rs", "-s", "-p", "no:cacheprovider", "-p", "no:hypothesispytest"]
    if how == "option":
        monkeypatch.setenv("BEAKER_MSSQL_PROFILE", "sqlserver")  # the option wins
        args.append(f"--mssql-profile={name}")
    else:
        monkeypatch.setenv("BEAKER_MSSQL_PROFILE", name)
    result = pytester.runpytest_inprocess(*args)
    result.stdout.fnmatch_lines([f"PROFILE {name}"])
    if name == "babelfish":
        result.assert_outcomes(passed=1, skipped=1)
        result.stdout.fnmatch_lines(["*[[]babelfish] Babelfish for PostgreSQL does not support MERGE*"])
    else:
        result.assert_outcomes(passed=2)


def test_escaped_bracket_in_a_name(server: SQLServerStandIn) -> None:
    conn = connect(server)
    try:
        create = "CREATE TABLE [dbo].[odd]]name] ([k] int NOT NULL)"
        if server.profile is BABELFISH:
            number, text = error_of(conn, create)
            assert number == 102 and "[odd]]name]" in text
            assert query(conn, "SELECT OBJECT_ID(N'[dbo].[odd]]name]')") == [(None,)]  # in a literal: fine
        else:
            query(conn, create)
            query(conn, "DROP TABLE [dbo].[odd]]name]")
        assert query(conn, "SELECT 1 AS [plain]") == [(1,)]
    finally:
        conn.close()
