"""Cancellation seen by a connection's single thread while its batch waits on a lock.

The stand-in reads a connection's requests on the thread that runs them, so during a batch nobody reads
the socket: the engine's cancel flag peeks at it (and at bytes already read past the request). These
cover what the peek must catch besides a lone ATTENTION (test_standin_wire): an ATTENTION that arrived
in the same read as its batch, and a client that vanishes while its batch waits.
"""

from __future__ import annotations

import pytest
from helpers import wait_until
from standin_raw import RawClient, is_attention_ack

from beaker_mssql.testing import SQLServerStandIn, tds

pytestmark = pytest.mark.standin_only


def _insert(server: SQLServerStandIn, table: str, sid: str) -> None:
    server.execute(f"INSERT INTO {table} ([sid], [session], [expires]) VALUES (N'{sid}', N'v', GETUTCDATE())")


def test_attention_sent_with_its_batch_cancels_it_once_blocked(standin: SQLServerStandIn,
                                                              mssql_table: str) -> None:
    _insert(standin, mssql_table, "k")
    holder = standin.connect()  # autocommit off: the UPDATE keeps its X lock
    raw = RawClient(standin)
    try:
        holder.cursor().execute(f"UPDATE {mssql_table} SET [session] = N'held' WHERE [sid] = N'k'")
        batch = tds.packetize(tds.PKT_SQL_BATCH, tds.build_sql_batch(
            f"UPDATE {mssql_table} SET [session] = N'raw' WHERE [sid] = N'k'"), 4096)
        attention = tds.HEADER.pack(tds.PKT_ATTENTION, tds.STATUS_EOM, 8, 0, 1, 0)
        raw.sock.sendall(batch + attention)  # one segment: the server reads both at once
        assert is_attention_ack(raw.read_message())  # not after the holder's lock: it is still held
        assert tds.done(tds.DONE_COUNT, 1, tds.CURCMD_SELECT) in raw.batch("SELECT 1")
    finally:
        holder.rollback()
        holder.close()
        raw.close()
    assert standin.execute(f"SELECT [session] FROM {mssql_table} WHERE [sid] = N'k'") == [("v",)]


def test_client_vanishing_while_its_batch_waits_rolls_it_back(standin: SQLServerStandIn,
                                                             mssql_table: str) -> None:
    _insert(standin, mssql_table, "k")
    holder = standin.connect()
    raw = RawClient(standin)
    spid = raw.spid
    try:
        holder.cursor().execute(f"UPDATE {mssql_table} SET [session] = N'held' WHERE [sid] = N'k'")
        raw.send_batch(f"BEGIN TRANSACTION; INSERT INTO {mssql_table} ([sid], [session], [expires]) "
                       f"VALUES (N'gone', N'x', GETUTCDATE()); "
                       f"UPDATE {mssql_table} SET [session] = N'raw' WHERE [sid] = N'k'")
        assert wait_until(lambda: spid in standin.engine.locks.waits)
        raw.abort()
        # Noticed while the holder still has its lock: the session closes and its INSERT rolls back.
        assert wait_until(lambda: spid not in standin.engine.sessions)
        gone = f"SELECT COUNT(*) FROM {mssql_table} WITH (NOLOCK) WHERE [sid] = N'gone'"
        assert standin.execute(gone) == [(0,)]
    finally:
        holder.rollback()
        holder.close()
