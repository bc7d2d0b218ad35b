"""tinyint and smallint in the stand-in's engine: ranges, SQL Server's overflow errors, arithmetic and
catalog. Why they exist: ODBC Driver 18 (inside mssql-python) declares a Python int of 0..255 as
``@P1 tinyint`` (and -32768..32767 as smallint) in sp_prepexec; the stand-in refused the declaration.
Sources: learn.microsoft.com/en-us/sql/t-sql/data-types/int-bigint-smallint-and-tinyint-transact-sql
(ranges), sys.messages 220 / 244 / 8115 (texts), data-type-precedence-transact-sql."""

from __future__ import annotations

from datetime import datetime

import pymssql
import pytest
from engine_tools import err, errs, q

from beaker_mssql.testing.clock import Clock
from beaker_mssql.testing.engine import Engine, EngineSession
from beaker_mssql.testing.results import ResultSet, SqlType


@pytest.fixture
def s() -> EngineSession:
    clock = Clock()
    clock.freeze()
    clock.set(datetime(2024, 2, 29, 12, 0, 0))
    return Engine(clock).connect()


def test_ranges_and_result_types(s: EngineSession) -> None:
    ev = s.execute("DECLARE @t tinyint = 255, @s smallint = -32768; SELECT @t AS t, @s AS s")
    (rs,) = [e for e in ev if isinstance(e, ResultSet)]
    assert rs.rows == [(255, -32768)]
    assert [c.type for c in rs.columns] == [SqlType.TINYINT, SqlType.SMALLINT]
    assert q(s, "SELECT CAST(0 AS tinyint), CAST(32767 AS smallint), CONVERT(tinyint, N'7')") == [
        (0, 32767, 7)]


@pytest.mark.parametrize(("sql", "number", "text"), [
    ("DECLARE @t tinyint = 256", 220, "Arithmetic overflow error for data type tinyint, value = 256."),
    ("DECLARE @t tinyint = -1", 220, "Arithmetic overflow error for data type tinyint, value = -1."),
    ("SELECT CAST(32768 AS smallint)", 220,
     "Arithmetic overflow error for data type smallint, value = 32768."),
    ("SELECT CAST(N'300' AS tinyint)", 244,
     "The conversion of the nvarchar value '300' overflowed an INT1 column. Use a larger integer column."),
    ("SELECT CAST('-40000' AS smallint)", 244,
     "The conversion of the varchar value '-40000' overflowed an INT2 column. Use a larger integer column."),
    ("DECLARE @a tinyint = 200; SELECT @a + @a", 8115,
     "Arithmetic overflow error converting expression to data type tinyint."),
    ("DECLARE @a smallint = 200; SELECT @a * @a", 8115,
     "Arithmetic overflow error converting expression to data type smallint."),
])
def test_overflow_is_sql_servers_error(s: EngineSession, sql: str, number: int, text: str) -> None:
    e = err(s, sql)
    assert (e.number, e.severity, e.text) == (number, 16, text)


def test_arithmetic_follows_precedence(s: EngineSession) -> None:
    # tinyint + int is int (int has the higher precedence); tinyint + smallint is smallint
    assert q(s, "DECLARE @a tinyint = 200; SELECT @a + 100, @a + CAST(1000 AS smallint)") == [(300, 1200)]
    # unary minus promotes tinyint to smallint (negative-transact-sql); ~ stays inside 0..255
    assert q(s, "DECLARE @a tinyint = 200; SELECT -@a, ~CAST(0 AS tinyint), ~CAST(5 AS smallint)") == [
        (-200, 255, -6)]
    assert q(s, "DECLARE @t tinyint = 3, @s smallint = 4; SELECT DATALENGTH(@t), DATALENGTH(@s)") == [(1, 2)]


def test_the_statement_shapes_a_driver_sends(s: EngineSession) -> None:
    """What mssql-python's sp_prepexec runs: tinyint/smallint parameters in DATEADD, TOP and comparisons."""
    q(s, "CREATE TABLE x (id int NOT NULL PRIMARY KEY, at datetime NOT NULL)")
    q(s, "INSERT INTO x VALUES (1, '2024-02-29 12:00:00'), (2, '2024-02-29 13:00:00'), (300, '2024-01-01')")
    assert q(s, "DECLARE @P1 tinyint = 60; SELECT DATEADD(second, @P1, at) FROM x WHERE id = 1") == [
        (datetime(2024, 2, 29, 12, 1, 0),)]
    assert q(s, "DECLARE @P1 smallint = 300; SELECT id FROM x WHERE id = @P1") == [(300,)]
    ev = s.execute("DECLARE @P1 tinyint = 2; DELETE TOP (@P1) FROM x WHERE id < 300")
    assert not errs(ev)
    assert q(s, "SELECT id FROM x") == [(300,)]


def test_columns_and_catalog(s: EngineSession) -> None:
    q(s, "CREATE TABLE y (id int NOT NULL PRIMARY KEY, t tinyint NULL, sm smallint NULL)")
    q(s, "INSERT INTO y VALUES (1, 200, -5), (2, 200, NULL)")
    assert q(s, "SELECT SUM(t), AVG(t), MIN(sm) FROM y") == [(400, 200, -5)]
    e = err(s, "INSERT INTO y VALUES (3, 256, 0)")
    assert (e.number, e.text) == (220, "Arithmetic overflow error for data type tinyint, value = 256.")
    assert q(s, "SELECT name, system_type_id, max_length, [precision] FROM sys.columns "
                "WHERE object_id = OBJECT_ID(N'y') AND name <> N'id' ORDER BY name") == [
        ("sm", 52, 2, 5), ("t", 48, 1, 3)]
    assert q(s, "SELECT DATA_TYPE FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_NAME = N'y' "
                "ORDER BY ORDINAL_POSITION") == [("int",), ("tinyint",), ("smallint",)]


def test_on_the_wire_as_intn_1_and_2(standin) -> None:
    """Result columns go out as INTN of length 1 / 2 ([MS-TDS] 2.2.5.4.2); pymssql decodes them."""
    conn = standin.connect(autocommit=True)
    try:
        cur = conn.cursor()
        cur.execute("SELECT CAST(255 AS tinyint) AS t, CAST(-32768 AS smallint) AS s, "
                    "CAST(NULL AS tinyint) AS n")
        assert cur.fetchall() == [(255, -32768, None)]
        with pytest.raises(pymssql.OperationalError) as info:
            cur.execute("DECLARE @t tinyint = 256")
        assert info.value.args[0] == 220
    finally:
        conn.close()
