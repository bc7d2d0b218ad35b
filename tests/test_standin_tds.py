"""Byte-level tests of the stand-in's TDS encoding (no sockets): what pymssql will have to parse."""

from __future__ import annotations

import struct
from datetime import datetime

import pytest

from beaker_mssql.testing import login, replies, tds
from beaker_mssql.testing.results import MAX, Column, DatabaseChanged, Done, Message, ResultSet, SqlType


def test_password_scrambling_round_trips_and_matches_the_spec_example() -> None:
    # [MS-TDS]: each byte has its nibbles swapped, then is XORed with 0xA5. 'a' (0x61 0x00) -> 0xB3 0xA5.
    assert login.encode_password("a") == bytes((0xB3, 0xA5))
    for secret in ["", "sa", "Pä$$wörd-123", "x" * 128]:
        assert login.decode_password(login.encode_password(secret)) == secret


def test_login7_fields_are_parsed_and_repr_hides_the_password() -> None:
    record = login.build_login7("app_user", "S3cret!", "sessions", app_name="myapp",
                                tds_version=tds.TDS73B, packet_size=8192)
    parsed = login.parse_login7(record)
    assert (parsed.user, parsed.password, parsed.database, parsed.app_name) == (
        "app_user", "S3cret!", "sessions", "myapp")
    assert parsed.tds_version == tds.TDS73B
    assert parsed.packet_size == 8192
    assert "S3cret" not in repr(parsed)


def test_login7_too_short_is_a_protocol_error() -> None:
    with pytest.raises(tds.ProtocolError):
        login.parse_login7(b"\x00" * 20)


def test_prelogin_answer_says_encryption_not_supported() -> None:
    options = login.parse_prelogin(login.build_prelogin_response())
    assert options[tds.PL_ENCRYPTION] == bytes((tds.ENCRYPT_NOT_SUP,))
    assert options[tds.PL_VERSION][:2] == bytes((16, 0))
    assert options[tds.PL_MARS] == b"\x00"


@pytest.mark.parametrize("client, expected", [
    (tds.TDS72, tds.TDS72), (tds.TDS73A, tds.TDS73A), (tds.TDS73B, tds.TDS73B), (tds.TDS74, tds.TDS74),
    (0x75000000, tds.TDS74),
])
def test_tds_version_negotiation(client: int, expected: int) -> None:
    assert login.negotiate_tds_version(client) == expected


def test_packet_size_is_clamped() -> None:
    assert login.negotiate_packet_size(0) == 4096
    assert login.negotiate_packet_size(100) == 512
    assert login.negotiate_packet_size(8192) == 8192
    assert login.negotiate_packet_size(65536) == 32767


def test_packetize_splits_at_packet_size_with_eom_only_on_the_last() -> None:
    payload = bytes(range(256)) * 40  # 10240 bytes
    data = tds.packetize(tds.PKT_TABULAR, payload, 4096, spid=51)
    pos, pieces, statuses, ids = 0, [], [], []
    while pos < len(data):
        ptype, status, length, spid, pid, _ = tds.HEADER.unpack_from(data, pos)
        assert ptype == tds.PKT_TABULAR and spid == 51 and length <= 4096
        pieces.append(data[pos + 8:pos + length])
        statuses.append(status)
        ids.append(pid)
        pos += length
    assert b"".join(pieces) == payload
    assert statuses == [0, 0, 1]
    assert ids == [1, 2, 3]


def test_sql_batch_skips_all_headers() -> None:
    assert tds.sql_batch_text(tds.build_sql_batch("SELECT N'é'"), tds.TDS74) == "SELECT N'é'"


@pytest.mark.parametrize("value, days, ticks", [
    (datetime(1900, 1, 1), 0, 0),
    (datetime(1900, 1, 2, 0, 0, 1), 1, 300),
    (datetime(1899, 12, 31, 12), -1, 43200 * 300),
    (datetime(2024, 2, 29, 13, 45, 6, 123000), (datetime(2024, 2, 29) - datetime(1900, 1, 1)).days,
     (13 * 3600 + 45 * 60 + 6) * 300 + 37),
    (datetime(2024, 1, 1, 23, 59, 59, 999000), (datetime(2024, 1, 2) - datetime(1900, 1, 1)).days, 0),
])
def test_datetime_days_and_ticks(value: datetime, days: int, ticks: int) -> None:
    assert replies.datetime_parts(value) == (days, ticks)


def test_plp_encoding_chunks_and_terminator() -> None:
    assert replies.plp(b"") == b"\x00" * 12
    small = replies.plp(b"abcd")
    assert small == struct.pack("<QI", 4, 4) + b"abcd" + b"\x00" * 4
    big = b"x" * (tds.PLP_CHUNK * 2 + 5)
    encoded = replies.plp(big)
    assert struct.unpack_from("<Q", encoded)[0] == len(big)
    assert encoded.endswith(b"\x00\x00\x00\x00")
    assert len(encoded) == 8 + 3 * 4 + len(big) + 4


def test_colmetadata_type_info_for_each_type() -> None:
    cases = {
        Column("a", SqlType.INT): b"\x26\x04",
        Column("a", SqlType.BIGINT): b"\x26\x08",
        Column("a", SqlType.BIT): b"\x68\x01",
        Column("a", SqlType.FLOAT): b"\x6d\x08",
        Column("a", SqlType.DATETIME): b"\x6f\x08",
        Column("a", SqlType.NVARCHAR, 255): b"\xe7\xfe\x01" + tds.COLLATION,
        Column("a", SqlType.NVARCHAR, MAX): b"\xe7\xff\xff" + tds.COLLATION,
        Column("a", SqlType.VARBINARY, 16): b"\xa5\x10\x00",
        Column("a", SqlType.VARBINARY, MAX): b"\xa5\xff\xff",
    }
    for column, expected in cases.items():
        assert replies.column_type_info(column)[0] == expected
    assert tds.COLLATION == bytes.fromhex("0904D00034")


def test_rows_encode_values_and_nulls() -> None:
    columns = [Column("i", SqlType.INT), Column("s", SqlType.NVARCHAR, 10),
               Column("m", SqlType.NVARCHAR, MAX), Column("b", SqlType.BIT)]
    encoder = replies.ResultEncoder(columns)
    assert encoder.metadata[0] == tds.TOKEN_COLMETADATA
    row = b"".join(encoder.rows([(7, "hé", None, True)]))
    assert row == (b"\xd1" + b"\x04" + struct.pack("<i", 7) + struct.pack("<H", 4) + "hé".encode("utf-16-le")
                   + b"\xff" * 8 + b"\x01\x01")
    nulls = b"".join(encoder.rows([(None, None, None, None)]))
    assert nulls == b"\xd1" + b"\x00" + b"\xff\xff" + b"\xff" * 8 + b"\x00"


def _dones(stream: bytes) -> list[tuple[int, int, int]]:
    """(status, curcmd, count) of the DONE tokens at the end of ``stream`` written by encode_events."""
    out = []
    pos = 0
    while True:
        pos = stream.find(b"\xfd", pos)
        if pos < 0 or pos + 13 > len(stream):
            return out
        out.append(struct.unpack_from("<HHQ", stream, pos + 1))
        pos += 13


def test_done_flags_more_count_and_error() -> None:
    events = [Done(None), Message(2627, 14, 1, "dup"), Done(error=True), Done(3)]
    stream = replies.encode_events(events, "S")
    assert _dones(stream) == [(tds.DONE_MORE, 0, 0), (tds.DONE_MORE | tds.DONE_ERROR, 0, 0),
                              (tds.DONE_COUNT, 0, 3)]
    assert stream.count(b"\xaa") >= 1


def test_events_without_a_final_done_still_end_with_done() -> None:
    stream = replies.encode_events([Done(1), Message(50000, 16, 1, "late")], "S")
    assert stream.endswith(tds.done(tds.DONE_ERROR))
    assert replies.encode_events([], "S") == tds.done()


def test_select_done_carries_select_curcmd() -> None:
    stream = replies.encode_events([ResultSet([Column("x", SqlType.INT)], [(1,)]), Done(1)], "S")
    assert stream.endswith(struct.pack("<BHHQ", 0xFD, tds.DONE_COUNT, tds.CURCMD_SELECT, 1))


def test_use_database_emits_envchange() -> None:
    stream = replies.encode_events([DatabaseChanged("test", "master"), Done(None)], "S")
    assert stream == tds.envchange_text(tds.ENV_DATABASE, "test", "master") + tds.done()


def test_error_token_layout() -> None:
    token = tds.message_token(Message(208, 16, 1, "Invalid object name 'x'.", line=3), "SRV")
    assert token[0] == tds.TOKEN_ERROR
    length = struct.unpack_from("<H", token, 1)[0]
    assert length == len(token) - 3
    number, state, severity = struct.unpack_from("<iBB", token, 3)
    assert (number, state, severity) == (208, 1, 16)
    assert struct.unpack_from("<i", token, len(token) - 4)[0] == 3
    info = tds.message_token(Message(5701, 0, 2, "x"), "SRV")
    assert info[0] == tds.TOKEN_INFO


def test_too_narrow_columns_are_sent_as_max() -> None:
    columns = [Column("s", SqlType.NVARCHAR, 4), Column("b", SqlType.VARBINARY, 2),
               Column("ok", SqlType.NVARCHAR, 9)]
    encoder = replies.ResultEncoder(columns, [("hello", b"abc", "fits"), (None, None, None)])
    assert b"\xe7\xff\xff" + tds.COLLATION + tds.b_varchar("s") in encoder.metadata
    assert b"\xa5\xff\xff" + tds.b_varchar("b") in encoder.metadata
    assert b"\xe7\x12\x00" + tds.COLLATION + tds.b_varchar("ok") in encoder.metadata
    row = b"".join(encoder.rows([("hello", b"abc", "fits")]))
    assert row.startswith(b"\xd1" + replies.plp("hello".encode("utf-16-le")) + replies.plp(b"abc"))
