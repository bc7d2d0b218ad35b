"""The statements: shapes, quoting, parameters only, LIKE escaping, DDL."""

from __future__ import annotations

import re

from beaker_mssql.config import parse_table_name
from beaker_mssql.sql import create_table_sql, escape_like, statements_for


def test_built_once_per_table_and_clock():
    t = parse_table_name("dbo.sessions")
    assert statements_for(t, True) is statements_for(parse_table_name("[dbo].[sessions]"), True)
    assert statements_for(t, True) is not statements_for(t, False)


def test_now_function():
    t = parse_table_name("s")
    assert "GETUTCDATE()" in statements_for(t, True).get and "GETDATE()" not in statements_for(t, True).get
    assert "GETDATE()" in statements_for(t, False).set and "GETUTCDATE()" not in statements_for(t, False).set


def test_get_is_exact_and_live():
    s = statements_for(parse_table_name("dbo.sessions"))
    assert s.get == (
        "SELECT [session], HASHBYTES('SHA2_256', [session]), DATEDIFF(second, GETUTCDATE(), [expires]) "
        "FROM [dbo].[sessions] WHERE [sid] = %(sid)s AND [sid] = %(sid)s "
        "COLLATE Latin1_General_BIN2 AND [expires] > GETUTCDATE()"
    )


def test_upsert_shape():
    """One copy of the value (in @data), then UPDATE, and INSERT only if the UPDATE found no row."""
    s = statements_for(parse_table_name("dbo.sessions")).set
    assert s.count("%(data)s") == 1
    declare, update, condition, insert = s.split("\n")
    assert declare == "DECLARE @data nvarchar(max) = %(data)s;"
    assert update.startswith("UPDATE [dbo].[sessions] SET [session] = @data, ")
    assert condition == "IF @@ROWCOUNT = 0"  # right after the UPDATE: its row count
    assert insert.strip().startswith("INSERT INTO [dbo].[sessions] ([sid], [session], [expires])")
    assert "VALUES (%(sid)s, @data, " in insert
    assert "MERGE" not in s
    assert s.count("COLLATE Latin1_General_BIN2") == 1
    assert s.count("DATEADD(second, %(ttl)s, GETUTCDATE())") == 2


def test_write_statements_change_no_session_state_and_need_no_hints():
    """Nothing a pooled connection could keep: no SET option, no open transaction, no table hint."""
    s = statements_for(parse_table_name("dbo.sessions"))
    for name in ("get", "set", "save_update", "save_insert", "touch", "destroy", "clear", "destroy_expired"):
        text = getattr(s, name)
        assert not re.search(r"\bSET\s+(NOCOUNT|XACT_ABORT)|BEGIN TRAN|WITH \(", text), name
    assert s.save_update.endswith("AND HASHBYTES('SHA2_256', [session]) = %(version)s")
    assert "[expires] <= GETUTCDATE()" in s.save_insert  # revives only a dead row, never a live one


def test_values_are_parameters_only():
    s = statements_for(parse_table_name("dbo.sessions"))
    names = ("get", "set", "save_update", "save_insert", "touch", "destroy", "clear", "destroy_expired",
             "delete_prefix", "keys_prefix")
    for name in names:
        text = getattr(s, name).replace("N'\\'", "").replace("'SHA2_256'", "")
        assert "'" not in text, name  # no literal values (only the ESCAPE char and the hash name)


def test_hostile_table_name_is_quoted():
    t = parse_table_name("[we]]ird].[na]]me]")
    s = statements_for(t)
    assert "FROM [we]]ird].[na]]me] WHERE" in s.get
    ddl = create_table_sql(t)
    assert "N'[we]]ird].[na]]me]'" in ddl


def test_batch_and_like_statements():
    s = statements_for(parse_table_name("t"))
    assert s.clear == "DELETE TOP (%(batch)s) FROM [dbo].[t]"
    assert s.destroy_expired == "DELETE TOP (%(batch)s) FROM [dbo].[t] WHERE [expires] <= GETUTCDATE()"
    assert s.delete_prefix.endswith("WHERE [sid] LIKE %(pattern)s ESCAPE N'\\'")
    assert "TRUNCATE" not in s.clear


def test_escape_like():
    assert escape_like("a_b%c[d\\e") == "a\\_b\\%c\\[d\\\\e"
    assert escape_like("plain") == "plain"


def test_create_table_sql_idempotent_shape():
    ddl = create_table_sql(parse_table_name("dbo.sessions"))
    assert "IF OBJECT_ID(N'[dbo].[sessions]', N'U') IS NULL" in ddl
    assert "[sid] nvarchar(255) NOT NULL PRIMARY KEY" in ddl
    assert "[session] nvarchar(max) NOT NULL" in ddl and "[expires] datetime NOT NULL" in ddl
    # the index is found by its column (Babelfish renames indexes), not by INDEXPROPERTY and its name
    assert "INDEXPROPERTY" not in ddl
    assert "ic.key_ordinal = 1 AND c.name = N'expires'" in ddl
    assert "WHERE i.object_id = OBJECT_ID(N'[dbo].[sessions]')" in ddl
    assert "CREATE INDEX [IX_sessions_expires] ON [dbo].[sessions] ([expires]);" in ddl
    # concurrent creators are serialised by an app lock owned by the DDL's transaction
    assert ddl.startswith("SET XACT_ABORT ON;\nBEGIN TRANSACTION;\n")
    assert "@Resource = N'beaker_mssql:create_table:[dbo].[sessions]'" in ddl
    assert "@LockOwner = N'Transaction'" in ddl and ddl.endswith("COMMIT TRANSACTION;\n")


def test_create_table_sql_memory_optimized():
    ddl = create_table_sql(parse_table_name("dbo.sessions"), memory_optimized=True)
    assert "MEMORY_OPTIMIZED = ON" in ddl and "DURABILITY = SCHEMA_ONLY" in ddl
    assert "NONCLUSTERED HASH" in ddl and "INDEX [IX_sessions_expires] NONCLUSTERED ([expires])" in ddl


def test_insert_sends_the_data_once():
    """pymssql writes parameters into the text client-side: a repeated %(data)s is escaped and sent twice."""
    s = statements_for(parse_table_name("dbo.sessions"))
    assert s.save_insert.count("%(data)s") == 1
    assert s.save_insert.startswith("DECLARE @data nvarchar(max) = %(data)s;")
    assert s.save_update.count("%(data)s") == 1
    for name in ("get", "set", "save_update", "save_insert", "touch", "destroy", "clear", "destroy_expired",
                 "delete_prefix", "keys_prefix"):
        assert getattr(s, name).count("%(data)s") <= 1, name  # no statement repeats the value
