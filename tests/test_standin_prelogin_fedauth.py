"""PRELOGIN's FEDAUTHREQUIRED by engine profile: SQL Server leaves it out ("not supported by SQL Server",
[MS-TDS] Appendix A <35>), the Azure SQL profile answers 0x01 to a client offering an Entra ID token, and
LOGIN7's fFedAuthEcho must match what was answered ([MS-TDS] 3.3.5.5). Measured with mssql-python:
ODBC Driver 18 echoes 1 after a 0x01 answer on a fully encrypted connection, 0 when the option is absent."""

from __future__ import annotations

import socket

import pytest

from beaker_mssql.testing import SQLServerStandIn, login, tds


def prelogin_answer(server: SQLServerStandIn) -> dict[int, bytes]:
    """The server's PRELOGIN options for a client that offers a federated-authentication token."""
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(tds.packetize(tds.PKT_PRELOGIN, login.build_prelogin_response(tds.ENCRYPT_NOT_SUP, True),
                                   4096))
        data = b""
        while len(data) < 8 or len(data) < tds.parse_header(data[:8])[2]:
            chunk = sock.recv(4096)
            assert chunk, "the stand-in closed the connection"
            data += chunk
    return login.parse_prelogin(data[8:])


@pytest.mark.parametrize(("profile", "answer"),
                         [("sqlserver", None), ("babelfish", None), ("azure", b"\x01")])
def test_fedauthrequired_answer(profile: str, answer: bytes | None) -> None:
    with SQLServerStandIn(profile=profile) as server:
        options = prelogin_answer(server)
    assert options.get(login.PL_FEDAUTHREQUIRED) == answer
    assert options[tds.PL_ENCRYPTION] == bytes((tds.ENCRYPT_NOT_SUP,))
