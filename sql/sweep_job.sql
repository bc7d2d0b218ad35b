-- beaker-mssql: delete expired sessions on the server, every 15 minutes, with SQL Server Agent.
--
-- An alternative to the package's own sweepers (auto_remove = true in the app, or
-- `beaker-mssql sweep` from cron). Pick ONE of them; they are safe together but redundant.
-- The job: SQL Server 2016+ and Azure SQL Managed Instance. Not for Azure SQL Database or Babelfish
-- (no SQL Server Agent there): use Elastic Jobs, cron + `beaker-mssql sweep`, or auto_remove
-- instead. The procedure alone (the first two batches) works everywhere CREATE PROCEDURE does,
-- Babelfish included: it is dropped and created rather than CREATE OR ALTER'ed, which Babelfish
-- rejects (re-running the script therefore drops permissions granted on the procedure itself).
--
-- Run it in the application's database (sqlcmd -d YourAppDb -i sql/sweep_job.sql): the job step
-- runs the procedure in the database this script was run in.
-- If your table is not [dbo].[sessions], edit the DELETE below.
-- If the application uses use_utc = false, replace GETUTCDATE() with GETDATE(): expiry times are
-- written by the database clock in the same time base the application reads them with.
--
-- Permissions: CREATE PROCEDURE + ALTER on the schema (db_ddladmin) for the procedure;
-- SQLAgentOperatorRole or sysadmin in msdb for the job; the job owner needs DELETE on the table.
--
-- Why batches: one DELETE of a million expired rows holds locks (possibly escalated to a table
-- lock, blocking every session save) and grows the log in one transaction. DELETE TOP (n) in a
-- loop keeps each transaction short; IX_sessions_expires makes each batch a range seek.

IF OBJECT_ID(N'[dbo].[beaker_mssql_sweep]', N'P') IS NOT NULL
    DROP PROCEDURE [dbo].[beaker_mssql_sweep];
GO

CREATE PROCEDURE [dbo].[beaker_mssql_sweep]
    @batch_size int = 1000
AS
BEGIN
    SET NOCOUNT ON;
    DECLARE @rows int, @deleted bigint = 0;
    IF @batch_size IS NULL OR @batch_size < 1
        SET @batch_size = 1000;
    WHILE 1 = 1
    BEGIN
        DELETE TOP (@batch_size) FROM [dbo].[sessions] WHERE [expires] <= GETUTCDATE();
        SET @rows = @@ROWCOUNT;
        SET @deleted = @deleted + @rows;
        IF @rows < @batch_size
            BREAK;
    END;
    SELECT @deleted AS [deleted];
END;
GO

-- The Agent job: created once (re-running the script leaves an existing job alone; drop it with
-- EXEC msdb.dbo.sp_delete_job @job_name = N'beaker_mssql_sweep' to recreate).
DECLARE @database sysname = DB_NAME();
IF NOT EXISTS (SELECT 1 FROM msdb.dbo.sysjobs WHERE [name] = N'beaker_mssql_sweep')
BEGIN
    EXEC msdb.dbo.sp_add_job
        @job_name = N'beaker_mssql_sweep',
        @description = N'beaker-mssql: delete expired session rows in batches (dbo.beaker_mssql_sweep).',
        @enabled = 1;
    EXEC msdb.dbo.sp_add_jobstep
        @job_name = N'beaker_mssql_sweep',
        @step_name = N'sweep expired sessions',
        @subsystem = N'TSQL',
        @database_name = @database,
        @command = N'EXEC [dbo].[beaker_mssql_sweep] @batch_size = 1000;',
        @retry_attempts = 1,
        @retry_interval = 1;
    IF NOT EXISTS (SELECT 1 FROM msdb.dbo.sysschedules WHERE [name] = N'beaker_mssql_every_15_minutes')
        EXEC msdb.dbo.sp_add_schedule
            @schedule_name = N'beaker_mssql_every_15_minutes',
            @freq_type = 4,               -- daily
            @freq_interval = 1,           -- every day
            @freq_subday_type = 4,        -- units of minutes
            @freq_subday_interval = 15,   -- every 15 minutes
            @active_start_time = 0;       -- from 00:00:00
    EXEC msdb.dbo.sp_attach_schedule
        @job_name = N'beaker_mssql_sweep',
        @schedule_name = N'beaker_mssql_every_15_minutes';
    EXEC msdb.dbo.sp_add_jobserver
        @job_name = N'beaker_mssql_sweep',
        @server_name = N'(local)';
END;
GO
