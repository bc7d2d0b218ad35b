-- beaker-mssql: the sessions table (disk-based; SQL Server 2016+, Azure SQL, Babelfish).
--
-- The same table connect-mssql-v2 (Node.js) uses, so both can share rows
-- (set data_serializer = json on the Beaker side for that):
--   [sid]     nvarchar(255) NOT NULL PRIMARY KEY   the session id (cache rows: "namespace:key")
--   [session] nvarchar(max) NOT NULL               the serialized session (JSON or Beaker's base64 blob)
--   [expires] datetime      NOT NULL               computed by the database clock:
--                                                  GETUTCDATE() (use_utc = true) or GETDATE()
-- IX_sessions_expires makes the sweep (DELETE ... WHERE expires <= GETUTCDATE()) an index range
-- scan instead of a full scan that blocks writers; connect-mssql-v2 never created it.
--
-- Idempotent: safe to run again, and safe to run from several places at once (an app lock held by
-- the transaction serialises the DDL). The index is looked up by its column, not its name, so this
-- also works on Babelfish (which renames indexes) and keeps an expires index you created yourself.
-- What `beaker-mssql create-table` sends; the test suite checks that this text and the CLI's DDL are
-- the same statement.
-- Run it in the application's database (sqlcmd -d YourAppDb -i sql/create_sessions.sql).
-- For another name, use `beaker-mssql create-table --table [app].[web_sessions] --dry-run`.
--
-- Permissions:
--   the application login needs db_datareader + db_datawriter on this database (SELECT, INSERT,
--   UPDATE, DELETE on the table), nothing more;
--   db_ddladmin (or CREATE TABLE + ALTER on the schema) only for whoever runs this script or
--   `beaker-mssql create-table` / create_table = true.
--   Example:
--     CREATE USER [web_app] FOR LOGIN [web_app];
--     ALTER ROLE db_datareader ADD MEMBER [web_app];
--     ALTER ROLE db_datawriter ADD MEMBER [web_app];

-- BEGIN create_table_sql
SET XACT_ABORT ON;
BEGIN TRANSACTION;
DECLARE @lock int;
EXEC @lock = sp_getapplock @Resource = N'beaker_mssql:create_table:[dbo].[sessions]', @LockMode = N'Exclusive', @LockOwner = N'Transaction', @LockTimeout = 60000;
IF @lock < 0
    THROW 50000, N'beaker_mssql: create_table on [dbo].[sessions] got no app lock in 60 s', 1;
IF OBJECT_ID(N'[dbo].[sessions]', N'U') IS NULL
BEGIN
    CREATE TABLE [dbo].[sessions] (
        [sid] nvarchar(255) NOT NULL PRIMARY KEY,
        [session] nvarchar(max) NOT NULL,
        [expires] datetime NOT NULL
    );
END;
IF NOT EXISTS (SELECT 1 FROM sys.indexes AS i
    JOIN sys.index_columns AS ic ON ic.object_id = i.object_id AND ic.index_id = i.index_id
    JOIN sys.columns AS c ON c.object_id = ic.object_id AND c.column_id = ic.column_id
    WHERE i.object_id = OBJECT_ID(N'[dbo].[sessions]') AND ic.key_ordinal = 1 AND c.name = N'expires')
    CREATE INDEX [IX_sessions_expires] ON [dbo].[sessions] ([expires]);
COMMIT TRANSACTION;
-- END create_table_sql
GO
