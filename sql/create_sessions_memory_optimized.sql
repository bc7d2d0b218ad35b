-- beaker-mssql: the sessions table as an In-Memory OLTP (memory-optimized) table.
--
-- SQL Server 2016+ (any edition since 2016 SP1) and Azure SQL Database Premium / Business Critical.
-- NOT Babelfish (no MEMORY_OPTIMIZED) and NOT the Azure SQL General Purpose tier.
-- The body below is exactly what `beaker-mssql create-table --memory-optimized --dry-run` prints
-- (the test suite compares them); use the CLI for another table name.
--
-- Why: session reads and writes are point lookups on sid, what a lock- and latch-free hash index
-- is for. On a busy site this removes page-latch contention and the log writes of every save.
--
-- Trade-offs (read before using):
--   * DURABILITY = SCHEMA_ONLY: rows are NOT logged and NOT persisted. A restart, failover or
--     database OFFLINE/ONLINE empties the table: every user is logged out. Often fine for sessions
--     and caches (and why it is fast); never fine for data you cannot lose. SCHEMA_AND_DATA keeps
--     the rows (and brings the log writes back).
--   * The database needs a MEMORY_OPTIMIZED_DATA filegroup first (below); it cannot be removed
--     again without dropping the database.
--   * Every row lives in memory: size memory (and the resource pool) for peak rows x row size.
--   * [sid] uses the binary collation Latin1_General_100_BIN2: ids compare exactly (case-
--     sensitively), so 'ABC' and 'abc' are two rows here, unlike on the disk-based table.
--   * Interpreted T-SQL on memory-optimized tables refuses the UPDLOCK table hint, and explicit
--     transactions need SNAPSHOT / REPEATABLEREAD / SERIALIZABLE access (or the database option
--     MEMORY_OPTIMIZED_ELEVATE_TO_SNAPSHOT = ON). beaker-mssql 0.1.0's save sends
--     WITH (UPDLOCK, SERIALIZABLE), so verify saves against your server before going live
--     (see README "Known limits").
--   * Rows over 8060 bytes go off-row (nvarchar(max) is supported since 2016) and are slower.
--
-- Index choices:
--   * [sid]: a HASH index, because every session lookup is an equality on sid. BUCKET_COUNT should
--     be 1-2x the number of distinct sids at peak (live rows + expired rows not yet swept); SQL
--     Server rounds it up to a power of two. Too few buckets -> long chains, slower lookups; too
--     many -> 8 bytes of memory each and slower scans. 1048576 (8 MB) suits up to about a million
--     rows; change it with ALTER TABLE ... ALTER INDEX ... REBUILD WITH (BUCKET_COUNT = n).
--   * [expires]: a range (NONCLUSTERED, Bw-tree) index, because the sweep asks for a range
--     (expires <= GETUTCDATE()), which a hash index cannot answer.
--
-- Permissions: as for create_sessions.sql (db_datareader + db_datawriter for the application,
-- db_ddladmin to create the table) plus ALTER DATABASE for the one-time setup:
--   ALTER DATABASE CURRENT ADD FILEGROUP [beaker_mssql_mod] CONTAINS MEMORY_OPTIMIZED_DATA;
--   ALTER DATABASE CURRENT ADD FILE (NAME = N'beaker_mssql_mod',
--       FILENAME = N'/var/opt/mssql/data/beaker_mssql_mod') TO FILEGROUP [beaker_mssql_mod];
--   ALTER DATABASE CURRENT SET MEMORY_OPTIMIZED_ELEVATE_TO_SNAPSHOT = ON;

-- BEGIN create_table_sql memory_optimized
IF OBJECT_ID(N'[dbo].[sessions]', N'U') IS NULL
BEGIN
    CREATE TABLE [dbo].[sessions] (
        [sid] nvarchar(255) COLLATE Latin1_General_100_BIN2 NOT NULL
            PRIMARY KEY NONCLUSTERED HASH WITH (BUCKET_COUNT = 1048576),
        [session] nvarchar(max) NOT NULL,
        [expires] datetime NOT NULL,
        INDEX [IX_sessions_expires] NONCLUSTERED ([expires])
    ) WITH (MEMORY_OPTIMIZED = ON, DURABILITY = SCHEMA_ONLY);
END;
-- END create_table_sql
GO
