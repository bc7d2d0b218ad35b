"""RPC parameters of type text/ntext/image: a LONGLEN length (FFFFFFFF for NULL) and the bytes, no text
pointer ([MS-TDS] 2.2.5.2.3 CHARBIN_NULL; the text pointer and timestamp belong to ROW data, 2.2.7.19).
ODBC Driver 18 (mssql-python) sends every parameterless statement as sp_prepare with a NULL NTEXT
@params; the stand-in read a text pointer there and dropped the connection."""

from __future__ import annotations

import struct

import pytest
from standin_raw import RawClient

from beaker_mssql.testing import tds
from beaker_mssql.testing.rpc import parse_rpc

# Captured from ODBC Driver 18.6 (mssql-python 1.16.0, cursor.execute("SELECT 1", None)): ALL_HEADERS,
# sp_prepare (proc id 11) with @handle int OUTPUT = NULL, @params NTEXT = NULL, @stmt nvarchar(max)
# (PLP) = N'SELECT 1', @options int = 1.
ODBC18_SP_PREPARE = bytes.fromhex(
    "16000000120000000200000000000000000001000000ffff0b0000000001260400000063000000000904d00034ffffffff"
    "0000e7ffff0904d00034feffffffffffffff10000000530045004c004500430054002000310000000000000026040401"
    "000000")
_COLLATION = bytes.fromhex("0904d00034")
_ALL_HEADERS = struct.pack("<IIHQI", 22, 18, 2, 0, 1)


def ntext_param(value: str | None) -> bytes:
    """An unnamed by-value NTEXT parameter as tedious and ODBC Driver 18 encode it."""
    head = b"\x00\x00\x63" + struct.pack("<I", 0x7FFFFFFE) + _COLLATION
    if value is None:
        return head + b"\xff\xff\xff\xff"
    raw = value.encode("utf-16-le")
    return head + struct.pack("<I", len(raw)) + raw


def test_the_odbc_driver_18_sp_prepare_decodes() -> None:
    (call,) = parse_rpc(ODBC18_SP_PREPARE, tds.TDS74)
    assert call.proc == "sp_prepare"
    assert [(p.wire_type, p.value) for p in call.params] == [
        ("int", None), ("ntext", None), ("nvarchar", "SELECT 1"), ("int", 1)]


def test_sp_executesql_with_an_ntext_statement(mssql_server) -> None:
    if not getattr(mssql_server, "is_standin", False):
        pytest.skip("sends a hand-built RPC to the stand-in")
    client = RawClient(mssql_server)
    try:
        assert client.logged_in
        # sp_executesql (proc id 10): @statement NTEXT, @params NTEXT, @p int
        payload = (_ALL_HEADERS + b"\xff\xff\x0a\x00\x00\x00" + ntext_param("SELECT @p + 1 AS n")
                   + ntext_param("@p int") + b"\x00\x00\x26\x04\x04" + struct.pack("<i", 41))
        client.send(tds.PKT_RPC, payload)
        reply = client.read_message()
        assert reply[:1] != bytes((tds.TOKEN_ERROR,)) and b"\xd1\x04" + struct.pack("<i", 42) in reply
        # and a NULL NTEXT @params: a statement without parameters
        client.send(tds.PKT_RPC, _ALL_HEADERS + b"\xff\xff\x0a\x00\x00\x00" + ntext_param("SELECT 7 AS n")
                    + ntext_param(None))
        reply = client.read_message()
        assert b"\xd1\x04" + struct.pack("<i", 7) in reply
    finally:
        client.close()
