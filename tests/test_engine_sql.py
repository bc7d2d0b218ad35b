"""The T-SQL subset, statement by statement, and SQL Server's refusals (engine only, no network)."""

from __future__ import annotations

from datetime import datetime

import pytest
from engine_tools import err, errs, q

from beaker_mssql.testing.clock import Clock
from beaker_mssql.testing.engine import Engine, EngineSession
from beaker_mssql.testing.results import Done, Message, ResultSet, SqlType


@pytest.fixture
def s() -> EngineSession:
    clock = Clock()
    clock.freeze()
    clock.set(datetime(2024, 2, 29, 12, 0, 0))
    sess = Engine(clock).connect()
    ev = sess.execute(
        "CREATE TABLE t (id int NOT NULL PRIMARY KEY, name nvarchar(20) NULL, n bigint NULL, b bit NULL, "
        "d datetime NULL, v varbinary(max) NULL);"
        "INSERT INTO t (id, name, n, b, d) VALUES (1, N'alpha', 10, 1, '2024-01-01'), "
        "(2, N'Beta', 20, 0, NULL),"
        " (3, N'gamma', NULL, NULL, '2024-03-01 10:00:00'), (4, NULL, 40, 1, NULL)"
    )
    assert not errs(ev), ev
    return sess


def test_select_basics(s: EngineSession) -> None:
    assert q(s, "SELECT 1, N'x', NULL, 2.5, 0x0aff") == [(1, "x", None, 2.5, b"\n\xff")]
    assert q(s, "SELECT id FROM t WHERE name = N'BETA'") == [(2,)]
    assert q(s, "SELECT id FROM t WHERE name <> N'beta' ORDER BY id DESC") == [(3,), (1,)]
    assert q(s, "SELECT TOP 2 id FROM t ORDER BY id") == [(1,), (2,)]
    assert q(s, "SELECT TOP (1) id FROM t ORDER BY n DESC") == [(4,)]
    assert q(s, "SELECT id FROM t WHERE n IS NULL") == [(3,)]
    assert q(s, "SELECT id FROM t WHERE n IN (10, 40) ORDER BY 1") == [(1,), (4,)]
    assert q(s, "SELECT id FROM t WHERE id NOT IN (1, 2, 3)") == [(4,)]
    assert q(s, "SELECT id FROM t WHERE n BETWEEN 15 AND 40 ORDER BY id") == [(2,), (4,)]
    assert q(s, "SELECT id FROM t WHERE name LIKE N'[ab]%' ORDER BY id") == [(1,), (2,)]
    assert q(s, "SELECT id FROM t WHERE name LIKE N'_amm_'") == [(3,)]
    assert q(s, "SELECT id FROM t WHERE NOT (id > 1 AND id < 4) ORDER BY id") == [(1,), (4,)]
    assert q(s, "SELECT id FROM t WHERE id = 1 OR name IS NULL ORDER BY id") == [(1,), (4,)]
    assert q(s, "SELECT x.id AS k FROM t AS x WHERE x.id = 2") == [(2,)]
    assert q(s, "SELECT k = id FROM t WHERE id = 2") == [(2,)]
    assert q(s, "SELECT DISTINCT b FROM t WHERE b IS NOT NULL ORDER BY b") == [(False,), (True,)]


def test_result_metadata(s: EngineSession) -> None:
    ev = s.execute("SELECT id, name AS nm, n + 1, d FROM t WHERE id = 1")
    rs = next(e for e in ev if isinstance(e, ResultSet))
    assert [(c.name, c.type, c.length, c.nullable) for c in rs.columns] == [
        ("id", SqlType.INT, 0, False),
        ("nm", SqlType.NVARCHAR, 20, True),
        ("", SqlType.BIGINT, 0, True),
        ("d", SqlType.DATETIME, 0, True),
    ]
    assert ev[-1] == Done(1)
    s.execute("SET NOCOUNT ON")
    assert s.execute("SELECT 1")[-1] == Done(None)


def test_aggregates_and_group_by(s: EngineSession) -> None:
    assert q(s, "SELECT COUNT(*), COUNT(n), SUM(n), MIN(name), MAX(d), AVG(n) FROM t") == [
        (4, 3, 70, "alpha", datetime(2024, 3, 1, 10), 23)
    ]
    assert q(s, "SELECT b, COUNT(*) AS c FROM t GROUP BY b ORDER BY b") == [(None, 1), (False, 1), (True, 2)]
    assert q(s, "SELECT b FROM t GROUP BY b HAVING COUNT(*) > 1") == [(True,)]
    assert q(s, "SELECT COUNT(*) FROM t WHERE id > 100") == [(0,)]
    assert q(s, "SELECT MAX(id) FROM t WHERE id > 100") == [(None,)]
    assert err(s, "SELECT name, COUNT(*) FROM t").number == 8120
    assert err(s, "SELECT id FROM t WHERE COUNT(*) > 1").number == 147


def test_join(s: EngineSession) -> None:
    s.execute("CREATE TABLE u (tid int NOT NULL, tag nvarchar(10) NOT NULL)")
    s.execute("INSERT INTO u VALUES (1, N'x'), (1, N'y'), (3, N'z')")
    assert q(s, "SELECT t.id, u.tag FROM t JOIN u ON u.tid = t.id ORDER BY u.tag") == [
        (1, "x"),
        (1, "y"),
        (3, "z"),
    ]
    assert q(s, "SELECT t.id, u.tag FROM t LEFT JOIN u ON u.tid = t.id WHERE t.id = 2") == [(2, None)]
    assert err(s, "SELECT id FROM t JOIN t ON 1 = 1").number == 1013
    e = err(s, "SELECT tid FROM t JOIN u ON nope.x = 1")
    assert e.number == 4104 and e.text == 'The multi-part identifier "nope.x" could not be bound.'


def test_expressions_and_functions(s: EngineSession) -> None:
    assert q(s, "SELECT N'a' + N'b', 'x' + NULL, 7 % 3, 2 * 3 + 1, -(4), ~0") == [("ab", None, 1, 7, -4, -1)]
    assert q(
        s, "SELECT LEN(N'ab  '), DATALENGTH(N'ab'), UPPER(N'x'), LOWER(N'Y'), LTRIM(N'  a'), RTRIM(N'a  ')"
    ) == [(2, 4, "X", "y", "a", "a")]
    assert q(
        s, "SELECT SUBSTRING(N'abcdef', 2, 3), LEFT(N'abc', 2), RIGHT(N'abc', 2), REPLACE(N'aXa', N'x', N'b')"
    ) == [("bcd", "ab", "bc", "aba")]
    assert q(
        s, "SELECT CHARINDEX(N'c', N'abc'), CONCAT(N'a', 1, NULL), ISNULL(NULL, 5), COALESCE(NULL, NULL, 3)"
    ) == [(3, "a1", 5, 3)]
    assert q(s, "SELECT NULLIF(1, 1), CASE WHEN 1 = 2 THEN N'a' ELSE N'b' END, CASE 2 WHEN 2 THEN 1 END") == [
        (None, "b", 1)
    ]
    assert q(
        s, "SELECT CAST(1 AS bit), CAST(N'12' AS bigint), CAST(12 AS nvarchar(5)), CAST(2.7 AS int)"
    ) == [(True, 12, "12", 2)]
    assert q(s, "SELECT CONVERT(nvarchar(30), CAST('2024-02-29 13:45:06.123' AS datetime), 121)") == [
        ("2024-02-29 13:45:06.123",)
    ]
    assert q(s, "SELECT CAST(CAST('2024-02-29 13:45:00' AS datetime) AS nvarchar(30))") == [
        ("Feb 29 2024  1:45PM",)
    ]
    assert q(s, "SELECT TRY_CAST(N'x' AS int), DATEDIFF(second, '2024-01-01', '2024-01-01 00:01:00')") == [
        (None, 60)
    ]
    assert q(
        s, "SELECT DATEADD(day, 1, '2024-02-28'), DATEADD(mi, 90, '2024-01-01'), DATEPART(hour, GETUTCDATE())"
    ) == [(datetime(2024, 2, 29), datetime(2024, 1, 1, 1, 30), 12)]
    assert q(s, "SELECT SYSUTCDATETIME(), GETDATE() - GETDATE()") == [
        (datetime(2024, 2, 29, 12), datetime(1900, 1, 1))
    ]


def test_compile_errors(s: EngineSession) -> None:
    e = err(s, "SELECT @x")
    assert (e.number, e.severity, e.text) == (137, 15, 'Must declare the scalar variable "@x".')
    assert err(s, "DECLARE @a int; DECLARE @a int").number == 134
    e = err(s, "SELECT NOPE(1)")
    assert (e.number, e.text) == (195, "'NOPE' is not a recognized built-in function name.")
    e = err(s, "SELECT GETDATE(1)")
    assert (e.number, e.text) == (174, "The getdate function requires 0 argument(s).")
    assert err(s, "SELECT DATEADD(fortnight, 1, GETDATE())").number == 155
    e = err(s, "SELECT 'abc")
    assert (e.number, e.text) == (105, "Unclosed quotation mark after the character string 'abc'.")
    assert err(s, "SELECT * FROM t WHERE id").number == 4145
    assert err(s, "SELECT id FROM t WITH (NOLOCK, UPDLOCK)").number == 1047
    assert err(s, "DELETE FROM t WITH (NOLOCK) WHERE id = 1").number == 1065
    assert err(s, "SELECT id FROM t WITH (FOO)").number == 321
    e = err(s, "SELECT id\nFROM t\nWHERE id = = 1")
    assert e.number == 102 and e.line == 3
    e = err(s, "SELECT key FROM t")
    assert e.number == 156 and e.text == "Incorrect syntax near the keyword 'key'."
    assert err(s, "SELECT [key] FROM t").number == 207
    e = err(s, "WITH x AS (SELECT 1 AS a) SELECT * FROM x")
    assert e.number == 102 and "does not support" in e.text
    assert "does not support" in err(s, "SELECT 1 UNION SELECT 2").text
    assert "does not support" in err(s, "CREATE TABLE z (a decimal(10, 2))").text
    assert err(s, "INSERT INTO t (id, name) VALUES (1)").number == 109
    assert err(s, "INSERT INTO t (id) VALUES (1, 2)").number == 110
    assert err(s, "INSERT INTO t VALUES (9)").number == 213


def test_variables_and_control_flow(s: EngineSession) -> None:
    assert q(
        s,
        "DECLARE @i int = 0, @s nvarchar(10) = N''; WHILE @i < 5 BEGIN SET @i += 1; "
        "IF @i = 3 CONTINUE; SET @s = @s + CAST(@i AS nvarchar(2)); IF @i = 4 BREAK; END; SELECT @i, @s",
    ) == [(4, "124")]
    assert q(s, "DECLARE @n nvarchar(3) = N'abcdef'; SELECT @n") == [("abc",)]
    assert q(s, "DECLARE @m int; SELECT @m = MAX(id) FROM t; SELECT @m") == [(4,)]
    assert q(s, "IF EXISTS (SELECT * FROM t WHERE id = 2) SELECT 1 ELSE SELECT 2") == [(1,)]
    assert q(s, "IF NOT EXISTS (SELECT * FROM t WHERE id = 9) SELECT 1 ELSE SELECT 2") == [(1,)]
    assert q(s, "SELECT (SELECT COUNT(*) FROM t)") == [(4,)]
    assert q(s, "SELECT id FROM t WHERE id IN (SELECT id FROM t WHERE n > 15) ORDER BY id") == [(2,), (4,)]
    assert err(s, "SELECT (SELECT id FROM t)").number == 512
    ev = s.execute("PRINT N'hello'; RAISERROR(N'oops %s %d', 16, 1, N'x', 5); SELECT 1")
    msgs = [e for e in ev if isinstance(e, Message)]
    assert (msgs[0].number, msgs[0].severity, msgs[0].text) == (0, 0, "hello")
    assert (msgs[1].number, msgs[1].severity, msgs[1].text) == (50000, 16, "oops x 5")
    assert [r for e in ev if isinstance(e, ResultSet) for r in e.rows] == [(1,)]
    ev = s.execute("THROW 50001, N'boom', 1; SELECT 1")
    assert [e.number for e in errs(ev)] == [50001] and not any(isinstance(e, ResultSet) for e in ev)
    assert err(s, "BREAK").number == 135


def test_update_delete_output(s: EngineSession) -> None:
    ev = s.execute(
        "UPDATE t SET n = n + 1, name = UPPER(name) OUTPUT deleted.n, inserted.n, inserted.name WHERE id <= 2"
    )
    rs = next(e for e in ev if isinstance(e, ResultSet))
    assert sorted(rs.rows) == [(10, 11, "ALPHA"), (20, 21, "BETA")]
    assert ev[-1] == Done(2)
    ev = s.execute("DELETE FROM t OUTPUT deleted.id WHERE id = 4")
    assert next(e for e in ev if isinstance(e, ResultSet)).rows == [(4,)]
    assert q(s, "SELECT @@ROWCOUNT") == [(1,)]
    s.execute("UPDATE TOP (1) t SET n = 0")
    assert q(s, "SELECT COUNT(*) FROM t WHERE n = 0") == [(1,)]
    # primary key update that would collide transiently is fine as a whole statement
    s.execute("CREATE TABLE k (id int PRIMARY KEY)")
    s.execute("INSERT INTO k VALUES (1), (2), (3)")
    assert not errs(s.execute("UPDATE k SET id = id + 1"))
    assert q(s, "SELECT id FROM k ORDER BY id") == [(2,), (3,), (4,)]
    assert err(s, "UPDATE k SET id = 2 WHERE id = 4").number == 2627
    assert err(s, "UPDATE t SET nope = 1").number == 207
    assert err(s, "UPDATE t SET name = N'x', name = N'y'").number == 264


def test_merge_update_delete_on_both_sides(s: EngineSession) -> None:
    """WHEN MATCHED and WHEN NOT MATCHED BY SOURCE each UPDATE one row and DELETE another; first WHEN wins."""
    s.execute("CREATE TABLE src (id int PRIMARY KEY, name nvarchar(20) NULL)")
    s.execute("INSERT INTO src VALUES (1, N'x'), (2, N'y'), (5, N'z')")
    ev = s.execute(
        "MERGE t AS tgt USING src ON tgt.id = src.id "
        "WHEN MATCHED AND src.id = 1 THEN DELETE WHEN MATCHED THEN UPDATE SET name = src.name "
        "WHEN NOT MATCHED THEN INSERT (id, name) VALUES (src.id, src.name) "
        "WHEN NOT MATCHED BY SOURCE AND tgt.id = 3 THEN DELETE "
        "WHEN NOT MATCHED BY SOURCE THEN UPDATE SET name = N'gone';"
    )
    assert ev == [Done(5)]
    assert q(s, "SELECT id, name, n FROM t ORDER BY id") == [(2, "y", 20), (4, "gone", 40), (5, "z", None)]


def test_ddl(s: EngineSession) -> None:
    e = err(s, "CREATE TABLE t (a int)")
    assert (e.number, e.text) == (2714, "There is already an object named 't' in the database.")
    assert err(s, "CREATE TABLE z (a int NULL PRIMARY KEY)").number == 8111
    assert err(s, "CREATE TABLE z (a int PRIMARY KEY, b int PRIMARY KEY)").number == 8110
    assert err(s, "CREATE TABLE z (a nvarchar(max) PRIMARY KEY)").number == 1919
    assert err(s, "CREATE TABLE z (a int, A int)").number == 2705
    assert err(s, "CREATE TABLE z (a nvarchar(5000))").number == 131
    s.execute(
        "CREATE TABLE z (a int NOT NULL, b nvarchar(10) NOT NULL, "
        "CONSTRAINT [PK_z] PRIMARY KEY CLUSTERED (a, b))"
    )
    assert err(s, "INSERT INTO z VALUES (1, N'x'), (1, N'X')").text.startswith(
        "Violation of PRIMARY KEY constraint 'PK_z'"
    )
    s.execute("CREATE UNIQUE INDEX ux ON z (b)")
    s.execute("INSERT INTO z VALUES (1, N'x')")
    e = err(s, "INSERT INTO z VALUES (2, N'X')")
    assert (e.number, e.text) == (
        2601,
        "Cannot insert duplicate key row in object 'dbo.z' with unique index 'ux'. "
        "The duplicate key value is (X).",
    )
    assert err(s, "CREATE INDEX ux ON z (a)").number == 1913
    assert err(s, "CREATE INDEX ix2 ON z (nope)").number == 1911
    assert err(s, "CREATE INDEX ix2 ON z (a) INCLUDE (nope)").number == 1911
    # 1919 names the table bare from CREATE TABLE, as schema.name from CREATE INDEX
    assert err(s, "CREATE INDEX ix2 ON t (v)").text == (
        "Column 'v' in table 'dbo.t' is of a type that is invalid for use as a key column in an index."
    )
    assert err(s, "CREATE TABLE y (a varbinary(max), PRIMARY KEY (a))").text == (
        "Column 'a' in table 'y' is of a type that is invalid for use as a key column in an index."
    )
    assert err(s, "CREATE INDEX ix2 ON nope (a)").number == 1088
    assert err(s, "DROP INDEX PK_z ON z").number == 3723
    assert not errs(s.execute("DROP INDEX ux ON z; DROP INDEX IF EXISTS ux ON z"))
    assert q(s, "SELECT INDEXPROPERTY(OBJECT_ID(N'z'), N'ux', 'IndexID')") == [(None,)]
    assert not errs(s.execute("TRUNCATE TABLE z; DROP TABLE z; DROP TABLE IF EXISTS z"))
    e = err(s, "DROP TABLE z")
    assert (e.number, e.severity) == (3701, 11)
    assert q(s, "SELECT OBJECT_ID(N'dbo.z'), OBJECT_ID(N'[dbo].[t]', N'U') - OBJECT_ID(N'test.dbo.t')") == [
        (None, 0)
    ]
    assert (
        err(s, "CREATE TABLE m (a int PRIMARY KEY NONCLUSTERED) WITH (MEMORY_OPTIMIZED = ON)").number == 41337
    )


def test_ddl_is_transactional(s: EngineSession) -> None:
    s.execute("BEGIN TRAN; CREATE TABLE z (a int); INSERT INTO z VALUES (1); ROLLBACK")
    assert q(s, "SELECT OBJECT_ID(N'z')") == [(None,)]
    s.execute("BEGIN TRAN; TRUNCATE TABLE t; DROP TABLE t; ROLLBACK")
    assert q(s, "SELECT COUNT(*) FROM t") == [(4,)]


def test_implicit_transactions(s: EngineSession) -> None:
    s.execute("SET IMPLICIT_TRANSACTIONS ON; DELETE FROM t WHERE id = 1")
    assert s.trancount == 1
    s.execute("ROLLBACK; SET IMPLICIT_TRANSACTIONS OFF")
    assert q(s, "SELECT COUNT(*) FROM t") == [(4,)]


def test_types_and_conversions(s: EngineSession) -> None:
    assert err(s, "INSERT INTO t (id, v) VALUES (9, N'abc')").number == 257
    assert not errs(s.execute("INSERT INTO t (id, v, b) VALUES (9, 0x00ff, 5)"))
    assert q(s, "SELECT v, b FROM t WHERE id = 9") == [(b"\x00\xff", True)]
    e = err(s, "INSERT INTO t (id) VALUES (N'x9')")
    assert (e.number, e.text) == (
        245,
        "Conversion failed when converting the nvarchar value 'x9' to data type int.",
    )
    assert err(s, "INSERT INTO t (id) VALUES (3000000000)").number == 8115
    assert err(s, "INSERT INTO t (id, d) VALUES (10, '1700-01-01')").number == 242
    # trailing blanks beyond the column length are dropped silently (ANSI_PADDING/ANSI_WARNINGS ON)
    assert not errs(s.execute(f"INSERT INTO t (id, name) VALUES (11, N'{'y' * 20}   ')"))
    assert q(s, "SELECT id FROM t WHERE id = N'2'") == [(2,)]
    assert q(s, "SELECT id FROM t WHERE d = '2024-01-01T00:00:00'") == [(1,)]
    assert q(s, "SELECT id FROM t WHERE name = N'ALPHA   ' COLLATE Latin1_General_BIN2") == []
    assert q(s, "SELECT id FROM t WHERE name = N'alpha   ' COLLATE Latin1_General_BIN2") == [(1,)]
    assert err(s, "SELECT name COLLATE Klingon_CI_AS FROM t").number == 102
    trunc = "x" * 21
    e = err(s, f"UPDATE t SET name = N'{trunc}' WHERE id = 1")
    assert e.text.endswith(f"column 'name'. Truncated value: '{'x' * 20}'.")


def test_catalog_views(s: EngineSession) -> None:
    oid = q(s, "SELECT OBJECT_ID(N't')")[0][0]
    assert q(s, "SELECT name, object_id FROM sys.tables") == [("t", oid)]
    assert q(s, "SELECT TABLE_NAME, TABLE_TYPE FROM INFORMATION_SCHEMA.TABLES") == [("t", "BASE TABLE")]
    cols = q(
        s,
        f"SELECT name, column_id, max_length, is_nullable FROM sys.columns WHERE object_id = {oid} "
        "ORDER BY column_id",
    )
    assert cols[:2] == [("id", 1, 4, False), ("name", 2, 40, True)]
    assert q(s, "SELECT COL_NAME(OBJECT_ID(N't'), 2), COL_LENGTH(N't', N'v')") == [("name", -1)]


def test_sp_getapplock_transaction_owner(s: EngineSession) -> None:
    # Transaction owner outside a transaction, bad mode or owner: -999 ("parameter validation or other call
    # error", the documented return code) and no error
    for args in (
        "@Resource = N'r', @LockMode = N'Exclusive'",
        "N'r', N'Bogus', N'Session'",
        "N'r', N'Shared', N'Nobody'",
    ):
        ev = s.execute(f"DECLARE @r int; EXEC @r = sp_getapplock {args}; SELECT @r")
        assert not errs(ev) and ev[-2].rows == [(-999,)], args
    assert err(s, "EXEC sp_getapplock NULL, N'Shared', N'Session'").number == 1224
    assert err(s, "EXEC sp_getapplock N'r', N'Shared', N'Session', -5").number == 1227
    other = s.engine.connect()
    assert q(s, "BEGIN TRAN; DECLARE @r int; EXEC @r = sp_getapplock N'r', N'Exclusive'; SELECT @r") == [(0,)]
    get = (
        "DECLARE @r int; EXEC @r = sp_getapplock @Resource = N'r', @LockMode = N'Shared', "
        "@LockOwner = N'Session', @LockTimeout = 0; SELECT @r"
    )
    assert q(other, get) == [(-1,)]
    assert q(other, get.replace("N'r'", "N'R'")) == [(0,)]  # resource names are case-sensitive
    s.execute("COMMIT")
    assert q(other, get) == [(0,)]
    assert err(s, "EXEC sp_nope").number == 2812
    assert err(s, "sp_nope").number == 2812


def applock_call(args: str) -> str:
    return f"DECLARE @r int = 7; EXEC @r = sp_getapplock {args}; SELECT @r"


@pytest.mark.parametrize("args", [
    "@LockMode = N'Exclusive', @LockOwner = N'Session'",  # @Resource has a default: NULL
    "@Resource = NULL, @LockMode = N'Exclusive', @LockOwner = N'Session'",
])
def test_sp_getapplock_without_resource_is_1224(s: EngineSession, args: str) -> None:
    e = err(s, applock_call(args))
    assert (e.number, e.severity) == (1224, 16)
    assert e.text == "An invalid application lock resource was passed to xp_userlock."
    assert q(s, "SELECT COUNT(*) FROM sys.tables") == [(1,)]  # the session goes on


def test_sp_releaseapplock_without_resource_is_1224(s: EngineSession) -> None:
    # sp_releaseapplock's @Resource has the same default, NULL (sp-releaseapplock-transact-sql)
    e = err(s, "DECLARE @r int; EXEC @r = sp_releaseapplock @LockOwner = N'Session'; SELECT @r")
    assert (e.number, e.severity) == (1224, 16)


@pytest.mark.parametrize("args", [
    "@Resource = N'r', @LockOwner = N'Session'",
    "N'r'",
    "@LockOwner = N'Session'",  # two are missing; @LockMode is the one without a default
])
def test_sp_getapplock_without_lock_mode_is_201(s: EngineSession, args: str) -> None:
    ev = s.execute(applock_call(args))
    (e,) = errs(ev)
    assert (e.number, e.severity, e.state) == (201, 16, 4)
    assert e.text == (
        "Procedure or function 'sp_getapplock' expects parameter '@LockMode', which was not supplied."
    )
    # Statement-level: the batch went on, and @r kept its value (the procedure never ran).
    assert [r for x in ev if isinstance(x, ResultSet) for r in x.rows] == [(7,)]
    assert s.engine.locks.held == {}


@pytest.mark.parametrize("args", [
    "N'r', N'Exclusiv', N'Session'",
    "N'r', N'', N'Session'",
    "N'r', NULL, N'Session'",
    "N'r', N'Exclusive', N'Sessions'",
    "N'r', N'Exclusive', N''",
])
def test_sp_getapplock_invalid_mode_or_owner_returns_minus_999(s: EngineSession, args: str) -> None:
    assert q(s, applock_call(args)) == [(-999,)]
    assert s.engine.locks.held == {}


@pytest.mark.parametrize(("timeout", "number", "text"), [
    ("N'soon'", 8114, "Error converting data type nvarchar to int."),
    ("'1.5'", 8114, "Error converting data type varchar to int."),
    ("3000000000", 8115, "Arithmetic overflow error converting expression to data type int."),
    ("GETUTCDATE()", 257, "Implicit conversion from data type datetime to int is not allowed. "
                          "Use the CONVERT function to run this query."),
])
def test_sp_getapplock_lock_timeout_of_the_wrong_type(s: EngineSession, timeout: str, number: int,
                                                      text: str) -> None:
    e = err(s, applock_call(f"N'r', N'Exclusive', N'Session', {timeout}"))
    assert (e.number, e.severity, e.text) == (number, 16, text)
    assert s.engine.locks.held == {}  # refused before any lock was taken


def test_sp_getapplock_lock_timeout_converts_like_an_int_parameter(s: EngineSession) -> None:
    other = s.engine.connect()
    assert q(s, applock_call("N'r', N'Exclusive', N'Session', N' 0 '")) == [(0,)]
    # a string or a float that converts to int is a valid timeout: 0 means "do not wait"
    assert q(other, applock_call("N'r', N'Exclusive', N'Session', '0'")) == [(-1,)]
    assert q(other, applock_call("N'r', N'Exclusive', N'Session', 0.9")) == [(-1,)]


def test_sp_getapplock_resource_is_truncated_to_255_characters(s: EngineSession) -> None:
    other = s.engine.connect()
    long_name = "a" * 255 + "first"
    assert q(s, applock_call(f"N'{long_name}', N'Exclusive', N'Session', 0")) == [(0,)]
    # Another name with the same first 255 characters is the same lock.
    assert q(other, applock_call(f"N'{'a' * 255}second', N'Exclusive', N'Session', 0")) == [(-1,)]
    assert q(other, applock_call(f"N'{'a' * 255}', N'Exclusive', N'Session', 0")) == [(-1,)]
    assert q(other, applock_call(f"N'{'a' * 254}', N'Exclusive', N'Session', 0")) == [(0,)]
    release = f"DECLARE @r int; EXEC @r = sp_releaseapplock N'{'a' * 255}', N'Session'; SELECT @r"
    assert q(s, release) == [(0,)]


def test_secondary_index_stays_consistent_with_scans() -> None:
    """Random inserts/updates/deletes/rollbacks: range queries through the index (lazily cleaned
    sorted list) agree with full scans that cannot use it."""
    import random

    rnd = random.Random(7)
    clock = Clock()
    clock.freeze()
    clock.set(datetime(2024, 1, 1))
    s = Engine(clock).connect()
    s.execute("CREATE TABLE r (k int PRIMARY KEY, e datetime NOT NULL); CREATE INDEX ix ON r (e)")
    for step in range(3000):
        k = rnd.randrange(300)
        secs = rnd.randrange(-50, 50)
        op = rnd.random()
        if op < 0.4:
            s.execute(f"INSERT INTO r VALUES ({k}, DATEADD(second, {secs}, GETUTCDATE()))")
        elif op < 0.6:
            s.execute(
                f"UPDATE r SET e = DATEADD(second, {secs}, GETUTCDATE()) WHERE k BETWEEN {k} AND {k + 20}"
            )
        elif op < 0.75:
            s.execute(
                f"DELETE TOP ({rnd.randrange(1, 30)}) FROM r WHERE e <= DATEADD(second, {secs}, GETUTCDATE())"
            )
        elif op < 0.85:
            s.execute(f"BEGIN TRAN; DELETE FROM r WHERE k < {k}; UPDATE r SET e = GETUTCDATE(); ROLLBACK")
        else:
            bound = f"DATEADD(second, {secs}, GETUTCDATE())"
            via_index = q(s, f"SELECT k FROM r WHERE e <= {bound} ORDER BY k")
            via_scan = q(s, f"SELECT k FROM r WHERE DATEADD(second, 0, e) <= {bound} ORDER BY k")
            assert via_index == via_scan, step
    assert q(s, "SELECT COUNT(*) FROM r WHERE e >= '1900-01-01'") == q(s, "SELECT COUNT(*) FROM r")


FUZZ_CORPUS = [
    ("SELECT a, b FROM t WHERE a = 1 AND b = N'x' COLLATE Latin1_General_BIN2 AND d > GETUTCDATE()"),
    (
        "SET NOCOUNT ON; SET XACT_ABORT ON; BEGIN TRANSACTION; UPDATE t WITH (UPDLOCK, "
        "SERIALIZABLE) SET b = N'y', d = DATEADD(second, 3600, GETUTCDATE()) WHERE a = 2; IF "
        "@@ROWCOUNT = 0 INSERT INTO t (a, b, d) VALUES (2, N'y', DATEADD(second, 3600, "
        "GETUTCDATE())); COMMIT TRANSACTION; SET XACT_ABORT OFF"
    ),
    "DELETE TOP (10) FROM t WHERE d <= GETUTCDATE()",
    "SELECT COUNT(*), MIN(d), MAX(d), SUM(CAST(DATALENGTH(b) AS bigint)) FROM t",
    "SELECT a FROM t WHERE b LIKE N'x\\_%' ESCAPE N'\\' ORDER BY a DESC",
    (
        "MERGE t WITH (HOLDLOCK) AS target USING (SELECT 3 AS a, N'z' AS b) AS source ON target.a "
        "= source.a WHEN MATCHED THEN UPDATE SET b = source.b WHEN NOT MATCHED THEN INSERT (a, b) "
        "VALUES (source.a, source.b);"
    ),
    (
        "DECLARE @r int; EXEC @r = sp_getapplock @Resource = N'x', @LockMode = N'Exclusive', "
        "@LockOwner = N'Session', @LockTimeout = 0; SELECT @r AS [result];"
    ),
    (
        "SELECT i.name, ic.key_ordinal, COL_NAME(ic.object_id, ic.column_id) FROM sys.indexes AS "
        "i JOIN sys.index_columns AS ic ON ic.object_id = i.object_id AND ic.index_id = "
        "i.index_id WHERE i.object_id = OBJECT_ID(N'[dbo].[t]') ORDER BY i.name, ic.key_ordinal"
    ),
    (
        "SELECT COLUMN_NAME, DATA_TYPE, CHARACTER_MAXIMUM_LENGTH, IS_NULLABLE FROM "
        "INFORMATION_SCHEMA.COLUMNS WHERE TABLE_NAME = N't' ORDER BY ORDINAL_POSITION"
    ),
    (
        "IF OBJECT_ID(N'[dbo].[t3]', N'U') IS NULL BEGIN CREATE TABLE [dbo].[t3] ([sid] "
        "nvarchar(255) NOT NULL PRIMARY KEY, [v] nvarchar(max) NOT NULL); END; IF "
        "INDEXPROPERTY(OBJECT_ID(N't3'), N'ix', 'IndexID') IS NULL CREATE INDEX ix ON t3 (sid)"
    ),
    "SELECT b, COUNT(*) FROM t GROUP BY b HAVING COUNT(*) > 0 ORDER BY 2 DESC",
    (
        "SELECT CASE WHEN a > 1 THEN N'big' ELSE N'small' END AS k, ISNULL(c, 0) + 1 FROM t WHERE "
        "a IN (1, 2, 3) OR a BETWEEN 5 AND 9"
    ),
    "UPDATE t SET c = c + 1 OUTPUT deleted.c, inserted.c WHERE a = 1",
    ("SELECT TOP (2) t.a, t2.x FROM t LEFT JOIN t2 ON t2.a = t.a WHERE EXISTS (SELECT 1 FROM t2)"),
    "INSERT INTO t2 (a, x) SELECT a, b FROM t WHERE a > 0",
    "BEGIN TRAN; SAVE TRAN s1; DELETE FROM t2; ROLLBACK TRAN s1; COMMIT",
    (
        "SELECT CONVERT(nvarchar(30), d, 121), CAST(N'12' AS int), TRY_CAST(N'x' AS int), "
        "DATEDIFF(ms, d, GETUTCDATE()) FROM t"
    ),
]


def test_mutated_statements_never_crash_the_engine() -> None:
    """Valid statements with tokens replaced, dropped or repeated: every outcome is a result or a SQL Server
    error message, never a Python exception escaping the engine."""
    import random
    import re

    tokre = re.compile(r"N'[^']*'|'[^']*'|\[[^\]]*\]|@@?\w+|\w+|<=|>=|<>|\S")
    vocabulary = sorted({t for q in FUZZ_CORPUS for t in tokre.findall(q)})
    rnd = random.Random(11)
    s = Engine(Clock()).connect()
    s.execute(
        "CREATE TABLE t (a int PRIMARY KEY, b nvarchar(10) NULL, c bigint NULL, d datetime NULL); "
        "CREATE TABLE t2 (a int NOT NULL, x nvarchar(max) NULL); "
        "INSERT INTO t VALUES (1, N'x', 2, GETUTCDATE())"
    )
    for _ in range(1500):
        toks = tokre.findall(rnd.choice(FUZZ_CORPUS))
        for _ in range(rnd.randint(1, 3)):
            j = rnd.randrange(len(toks))
            op = rnd.random()
            if op < 0.4:
                toks[j] = rnd.choice(vocabulary)
            elif op < 0.7 and len(toks) > 1:
                del toks[j]
            else:
                toks.insert(j, rnd.choice(vocabulary))
        s.execute(" ".join(toks))  # raises only on an engine bug
        if s.trancount:
            s.execute("WHILE @@TRANCOUNT > 0 ROLLBACK")
        if s.database != "test":
            s.execute("USE test")
