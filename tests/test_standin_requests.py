"""Transaction-manager requests, RESETCONNECTION and the transaction ENVCHANGEs, byte by byte.

tedious sends these (its beginTransaction / commitTransaction / rollbackTransaction / saveTransaction and
a pooled connection's reset); the Node tests run them through the real client, these pin the details
the client relies on: [MS-TDS] 2.2.6.9 (TM requests), 2.2.3.1.2 (RESETCONNECTION), 2.2.7.9 (ENVCHANGE).
"""

from __future__ import annotations

import struct

from standin_raw import RawClient

from beaker_mssql.testing import login, tds
from beaker_mssql.testing.tm import TM_BEGIN_XACT, TM_COMMIT_XACT, TM_ROLLBACK_XACT, TM_SAVE_XACT

ALL_HEADERS = struct.pack("<IIHQI", 22, 18, 2, 0, 1)  # one transaction-descriptor header


def tm(kind: int, name: str = "", isolation: int = 2) -> bytes:
    """A TM request as tedious writes it (name length in bytes, then UTF-16LE)."""
    raw = name.encode("utf-16-le")
    body = struct.pack("<H", kind)
    if kind == TM_BEGIN_XACT:
        body += bytes((isolation, len(raw))) + raw
    elif kind in (TM_COMMIT_XACT, TM_ROLLBACK_XACT):
        body += bytes((len(raw),)) + raw + b"\x00"
    else:
        body += bytes((len(raw),)) + raw
    return ALL_HEADERS + body


def envchange(kind: int) -> bytes:
    return bytes((tds.TOKEN_ENVCHANGE,)) + b"\x0b\x00" + bytes((kind,))  # 8-byte descriptor on one side


def error_numbers(reply: bytes) -> list[int]:
    """Numbers of the ERROR tokens in a reply (enough parsing for these small replies)."""
    numbers = []
    pos = 0
    while True:
        pos = reply.find(bytes((tds.TOKEN_ERROR,)), pos)
        if pos < 0 or pos + 7 > len(reply):
            return numbers
        numbers.append(struct.unpack_from("<i", reply, pos + 3)[0])
        pos += 1


def trancount(raw: RawClient) -> int:
    reply = raw.batch("SELECT @@TRANCOUNT")
    # ROW token: 0xD1, then INTN length 4 and the value
    pos = reply.index(b"\xd1\x04")
    return int(struct.unpack_from("<i", reply, pos + 2)[0])


def test_tm_begin_commit_rollback_save(standin):
    standin.execute("CREATE TABLE tm_t (n int)")
    raw = RawClient(standin)
    try:
        raw.send(tds.PKT_TRANSACTION_MANAGER, tm(TM_BEGIN_XACT, "tx1"))
        reply = raw.read_message()
        assert reply.startswith(envchange(tds.ENV_BEGIN_TRAN)) and error_numbers(reply) == []
        assert reply.endswith(tds.done())
        assert trancount(raw) == 1
        raw.batch("INSERT INTO tm_t VALUES (1)")
        raw.send(tds.PKT_TRANSACTION_MANAGER, tm(TM_SAVE_XACT, "sp1"))
        assert error_numbers(raw.read_message()) == []
        raw.batch("INSERT INTO tm_t VALUES (2)")
        raw.send(tds.PKT_TRANSACTION_MANAGER, tm(TM_ROLLBACK_XACT, "sp1"))  # to the savepoint
        assert error_numbers(raw.read_message()) == []
        assert trancount(raw) == 1
        raw.send(tds.PKT_TRANSACTION_MANAGER, tm(TM_COMMIT_XACT))
        reply = raw.read_message()
        assert reply.startswith(envchange(tds.ENV_COMMIT_TRAN)) and error_numbers(reply) == []
        assert standin.execute("SELECT n FROM tm_t") == [(1,)]

        raw.send(tds.PKT_TRANSACTION_MANAGER, tm(TM_BEGIN_XACT))
        raw.read_message()
        raw.batch("INSERT INTO tm_t VALUES (3)")
        raw.send(tds.PKT_TRANSACTION_MANAGER, tm(TM_ROLLBACK_XACT))
        assert raw.read_message().startswith(envchange(tds.ENV_ROLLBACK_TRAN))
        assert standin.execute("SELECT n FROM tm_t") == [(1,)]
    finally:
        raw.close()
        standin.execute("DROP TABLE tm_t")


def test_tm_without_a_transaction_gives_3902_3903_628(standin):
    raw = RawClient(standin)
    try:
        for kind, number in ((TM_COMMIT_XACT, 3902), (TM_ROLLBACK_XACT, 3903), (TM_SAVE_XACT, 628)):
            raw.send(tds.PKT_TRANSACTION_MANAGER, tm(kind, "x" if kind == TM_SAVE_XACT else ""))
            reply = raw.read_message()
            assert error_numbers(reply) == [number]
            assert reply.endswith(tds.done(tds.DONE_ERROR))
        raw.send(tds.PKT_TRANSACTION_MANAGER, tm(TM_BEGIN_XACT, isolation=5))  # SNAPSHOT: refused
        assert error_numbers(raw.read_message()) != []
    finally:
        raw.close()


def test_batch_transactions_send_envchanges_too(standin):
    raw = RawClient(standin)
    try:
        reply = raw.batch("BEGIN TRANSACTION")
        assert envchange(tds.ENV_BEGIN_TRAN) in reply and reply.endswith(tds.done())
        assert envchange(tds.ENV_BEGIN_TRAN) not in raw.batch("BEGIN TRANSACTION")  # nested: no new one
        assert envchange(tds.ENV_COMMIT_TRAN) not in raw.batch("COMMIT")  # 2 -> 1
        assert envchange(tds.ENV_COMMIT_TRAN) in raw.batch("COMMIT")
        raw.batch("BEGIN TRAN")
        assert envchange(tds.ENV_ROLLBACK_TRAN) in raw.batch("ROLLBACK")
    finally:
        raw.close()


def _send_with_status(raw: RawClient, sql: str, status: int) -> bytes:
    payload = tds.build_sql_batch(sql)
    raw.sock.sendall(tds.HEADER.pack(tds.PKT_SQL_BATCH, status, len(payload) + 8, 0, 1, 0) + payload)
    return raw.read_message()


def test_resetconnection_rolls_back_and_resets_options(standin):
    standin.execute("CREATE TABLE reset_t (n int)")
    raw = RawClient(standin)
    try:
        raw.batch("SET NOCOUNT ON; SET XACT_ABORT ON; USE master; BEGIN TRAN; "
                  "INSERT INTO test.dbo.reset_t VALUES (1)")
        reply = _send_with_status(raw, "SELECT @@TRANCOUNT, @@OPTIONS & 16384, DB_NAME()",
                                  tds.STATUS_EOM | tds.STATUS_RESETCONNECTION)
        ack = tds.envchange_binary(tds.ENV_RESET_ACK, b"", b"")
        assert ack in reply and envchange(tds.ENV_ROLLBACK_TRAN) in reply
        assert reply.index(ack) < reply.index(b"\xd1")  # acknowledged before the request's own rows
        assert tds.database_changed("test", "master") in reply
        assert "test".encode("utf-16-le") in reply[reply.index(b"\xd1"):]
        assert standin.execute("SELECT COUNT(*) FROM reset_t") == [(0,)]
        assert trancount(raw) == 0

        raw.batch("BEGIN TRAN; INSERT INTO reset_t VALUES (2)")
        reply = _send_with_status(raw, "SELECT 1", tds.STATUS_EOM | tds.STATUS_RESETCONNECTIONSKIPTRAN)
        assert tds.envchange_binary(tds.ENV_RESET_ACK, b"", b"") in reply
        assert trancount(raw) == 1  # SKIPTRAN keeps the transaction
        raw.batch("COMMIT")
        assert standin.execute("SELECT n FROM reset_t") == [(2,)]
    finally:
        raw.close()
        standin.execute("DROP TABLE reset_t")


def test_login_feature_extension_utf8_is_acknowledged(standin):
    """TDS 7.4 FeatureExt: UTF8_SUPPORT is acked (FEATUREEXTACK); features the server does not know are
    ignored, as [MS-TDS] 2.2.6.4 says a server does."""
    record = bytearray(login.build_login7(standin.user, standin.password, standin.database))
    ext = bytes((tds.FEATURE_UTF8_SUPPORT,)) + struct.pack("<I", 1) + b"\x01"
    ext += bytes((0x42,)) + struct.pack("<I", 2) + b"??" + bytes((tds.FEATURE_TERMINATOR,))
    offset_pos = len(record)
    record += struct.pack("<I", offset_pos + 4) + ext
    struct.pack_into("<HH", record, 36 + 4 * 5, offset_pos, 4)  # ibExtension -> the DWORD offset
    record[27] |= 0x10  # fExtension
    struct.pack_into("<I", record, 0, len(record))
    raw = RawClient.__new__(RawClient)
    import socket

    raw.sock = socket.create_connection((standin.host, standin.port), timeout=10)
    try:
        raw.send(tds.PKT_PRELOGIN, login.build_prelogin_request())
        raw.read_message()
        raw.send(tds.PKT_LOGIN7, bytes(record))
        reply = raw.read_message()
        assert bytes((tds.TOKEN_LOGINACK,)) in reply
        ack = bytes((tds.TOKEN_FEATUREEXTACK, tds.FEATURE_UTF8_SUPPORT)) + struct.pack("<I", 1) + b"\x01\xff"
        assert ack in reply
        assert reply.index(ack) > reply.index(bytes((tds.TOKEN_LOGINACK,)))
    finally:
        raw.close()
