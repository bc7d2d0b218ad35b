"""The sql/ scripts: the DDL is the package's own text, supported statements run through pymssql,
and what the stand-in does not implement (procedures, msdb, In-Memory OLTP) is refused loudly,
never skipped silently."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pymssql
import pytest

from beaker_mssql.cli import main as cli_main
from beaker_mssql.config import TableName, parse_table_name
from beaker_mssql.sql import create_table_sql, index_name, statements_for
from beaker_mssql.store import MSSQLStore
from beaker_mssql.testing.profiles import babelfish_index_name

ROOT = Path(__file__).resolve().parent.parent
SQL_DIR = ROOT / "sql"
DEFAULT = TableName("dbo", "sessions")
GO = re.compile(r"^[ \t]*GO[ \t]*$", re.IGNORECASE | re.MULTILINE)


def read(name: str) -> str:
    return (SQL_DIR / name).read_text(encoding="utf-8")


def batches(text: str) -> list[str]:
    """Split on GO lines as sqlcmd does; whole-line comments out, comment-only batches dropped."""
    result = []
    for batch in GO.split(text):
        code = [line for line in batch.splitlines() if not line.strip().startswith("--")]
        body = "\n".join(code).strip()
        if body:
            result.append(body + "\n")
    return result


def marked(text: str) -> str:
    """The statement text between the BEGIN/END create_table_sql marker comments, byte for byte."""
    match = re.search(r"^-- BEGIN create_table_sql[^\n]*\n(.*?)^-- END create_table_sql$", text, re.S | re.M)
    assert match, "marker comments missing"
    return match.group(1)


def for_table(sql: str, table: TableName) -> str:
    """The script text retargeted at another table (the scripts name [dbo].[sessions])."""
    return sql.replace(DEFAULT.quoted, table.quoted).replace(index_name(DEFAULT), index_name(table))


def run_batch(server, sql: str) -> None:
    conn = server.connect(autocommit=True)
    try:
        conn.cursor().execute(sql)
    finally:
        conn.close()


@pytest.fixture
def fresh_table(mssql_server):
    table = TableName("dbo", f"script_{uuid.uuid4().hex[:10]}")
    yield table
    mssql_server.execute(f"IF OBJECT_ID(N'{table.quoted}', N'U') IS NOT NULL DROP TABLE {table.quoted};")


def test_every_script_is_covered():
    assert sorted(p.name for p in SQL_DIR.glob("*.sql")) == [
        "create_sessions.sql",
        "create_sessions_memory_optimized.sql",
        "sweep_job.sql",
    ]


@pytest.mark.parametrize(
    ("name", "memory_optimized"),
    [("create_sessions.sql", False), ("create_sessions_memory_optimized.sql", True)],
)
def test_script_ddl_is_exactly_the_package_ddl(name, memory_optimized):
    """No hand-written copy can drift: the script holds create_table_sql's exact text."""
    text = read(name)
    assert marked(text) == create_table_sql(DEFAULT, memory_optimized=memory_optimized)
    # ... and that text is the script's only statement batch
    assert batches(text) == [marked(text)]


@pytest.mark.parametrize(
    ("name", "flags"),
    [("create_sessions.sql", []), ("create_sessions_memory_optimized.sql", ["--memory-optimized"])],
)
def test_cli_dry_run_prints_the_script_ddl(capsys, monkeypatch, name, flags):
    monkeypatch.delenv("BEAKER_MSSQL_URL", raising=False)
    assert cli_main(["create-table", "--dry-run", *flags]) == 0
    assert capsys.readouterr().out == marked(read(name))


def test_create_sessions_script_runs_is_idempotent_and_passes_check(
    mssql_server, mssql_url, fresh_table, mssql_profile
):
    (batch,) = batches(read("create_sessions.sql"))
    sql = for_table(batch, fresh_table)
    assert sql == create_table_sql(fresh_table)  # retargeting gives the CLI's DDL for that name
    run_batch(mssql_server, sql)
    run_batch(mssql_server, sql)  # idempotent: the second run changes nothing and does not fail
    indexes = mssql_server.execute(
        f"SELECT name FROM sys.indexes WHERE object_id = OBJECT_ID(N'{fresh_table.quoted}') "
        "AND name IS NOT NULL"
    )
    expected = index_name(fresh_table)
    if mssql_profile.rewritten_index_names:  # Babelfish shows the name rewritten
        expected = babelfish_index_name(expected, fresh_table.name)
    assert expected in {str(r[0]) for r in indexes}
    store = MSSQLStore(url=mssql_url, table=fresh_table.quoted)
    try:
        assert store.check_table() == []
        store.set("abc", '{"a": 1}', ttl=60)
        assert store.get("abc") == '{"a": 1}'
    finally:
        store.close()


def test_memory_optimized_script_is_refused_by_the_standin(standin, fresh_table):
    """The stand-in has no In-Memory OLTP: it must say so, not pretend to create the table."""
    (batch,) = batches(read("create_sessions_memory_optimized.sql"))
    with pytest.raises(pymssql.Error) as exc:
        run_batch(standin, for_table(batch, fresh_table))
    # 41337: what SQL Server says on a database without a MEMORY_OPTIMIZED_DATA filegroup
    assert exc.value.args[0] == 41337
    assert standin.execute(f"SELECT OBJECT_ID(N'{fresh_table.quoted}', N'U')") == [(None,)]


def test_sweep_job_batches_are_refused_by_the_standin(standin):
    """CREATE/DROP PROCEDURE and msdb/SQL Server Agent are outside the stand-in's subset: all refused."""
    drop, procedure, job = batches(read("sweep_job.sql"))
    assert drop.startswith("IF OBJECT_ID(N'[dbo].[beaker_mssql_sweep]', N'P') IS NOT NULL")
    assert procedure.startswith("CREATE PROCEDURE [dbo].[beaker_mssql_sweep]")
    assert "msdb.dbo.sp_add_job" in job
    for batch in (drop, procedure):
        with pytest.raises(pymssql.Error) as exc:
            run_batch(standin, batch)
        assert exc.value.args[0] == 102 and b"does not support" in exc.value.args[1]
    with pytest.raises(pymssql.Error) as exc:
        run_batch(standin, job)
    assert exc.value.args[0] == 208 and b"msdb.dbo.sysjobs" in exc.value.args[1]  # no msdb


def test_sweep_procedure_deletes_like_the_package(mssql_server, mssql_table):
    """The procedure's DELETE is the package's own sweep statement; run it to see it is right."""
    _, procedure, _ = batches(read("sweep_job.sql"))
    package = statements_for(DEFAULT, True).destroy_expired.replace("%(batch)s", "@batch_size")
    assert package + ";" in procedure
    for sql in (
        "DELETE TOP (@batch_size)",
        "@@ROWCOUNT",
        "IF @rows < @batch_size",
        "BREAK",
    ):
        assert sql in procedure
    table = parse_table_name(mssql_table)
    for i in range(3):
        mssql_server.execute(
            f"INSERT INTO {table.quoted} ([sid], [session], [expires]) "
            f"VALUES (N'old{i}', N'x', DATEADD(second, -5, GETUTCDATE()))"
        )
    mssql_server.execute(
        f"INSERT INTO {table.quoted} ([sid], [session], [expires]) "
        f"VALUES (N'live', N'x', DATEADD(second, 600, GETUTCDATE()))"
    )
    delete = for_table(package, table).replace("@batch_size", "2")
    conn = mssql_server.connect(autocommit=True)
    try:
        cur = conn.cursor()
        counts = []
        while True:  # the procedure's loop, driven from Python
            cur.execute(delete)
            counts.append(cur.rowcount)
            if cur.rowcount < 2:
                break
    finally:
        conn.close()
    assert counts == [2, 1]
    assert [r[0] for r in mssql_server.execute(f"SELECT [sid] FROM {table.quoted}")] == ["live"]


def test_sweep_procedure_on_a_real_server(mssql_server, mssql_table):
    """Where CREATE PROCEDURE exists (BEAKER_MSSQL_TEST_URL), create, run and drop the procedure."""
    if getattr(mssql_server, "is_standin", True):
        pytest.skip("the stand-in refuses CREATE PROCEDURE (asserted above); needs BEAKER_MSSQL_TEST_URL")
    drop, procedure, _ = batches(read("sweep_job.sql"))
    name = f"beaker_mssql_sweep_{uuid.uuid4().hex[:8]}"
    for batch in (drop, procedure, drop, procedure):  # twice: the script can be run again
        sql = for_table(batch, parse_table_name(mssql_table)).replace("beaker_mssql_sweep", name)
        run_batch(mssql_server, sql)
    try:
        mssql_server.execute(
            f"INSERT INTO {mssql_table} ([sid], [session], [expires]) "
            f"VALUES (N'old', N'x', DATEADD(second, -5, GETUTCDATE())), "
            f"(N'live', N'x', DATEADD(second, 600, GETUTCDATE()))"
        )
        rows = mssql_server.execute(f"EXEC [dbo].[{name}] @batch_size = 1")
        assert rows == [(1,)]
        assert [r[0] for r in mssql_server.execute(f"SELECT [sid] FROM {mssql_table}")] == ["live"]
    finally:
        mssql_server.execute(f"DROP PROCEDURE [dbo].[{name}]")


def test_scripts_document_permissions_and_trade_offs():
    create = read("create_sessions.sql")
    assert "db_datareader" in create and "db_datawriter" in create and "db_ddladmin" in create
    memory = read("create_sessions_memory_optimized.sql")
    phrases = ("DURABILITY = SCHEMA_ONLY", "MEMORY_OPTIMIZED_DATA", "Babelfish", "BUCKET_COUNT", "restart")
    for phrase in phrases:
        assert phrase in memory
    job = read("sweep_job.sql")
    calls = ("sp_add_job", "sp_add_jobstep", "sp_add_schedule", "sp_attach_schedule", "sp_add_jobserver")
    for call in calls:
        assert f"msdb.dbo.{call}\n" in job
    assert "@freq_subday_type = 4" in job and "@freq_subday_interval = 15" in job
