"""A bare TDS client for stand-in tests that need what pymssql cannot do on demand (send ATTENTION
while a batch is blocked, drop the socket with a transaction open)."""

from __future__ import annotations

import socket
import struct
from typing import Any

from beaker_mssql.testing import login, tds


class RawClient:
    def __init__(self, server: Any, database: str | None = None, password: str | None = None) -> None:
        self.spid = 0  # from the server's packet headers, as SQL Server sends it
        self.sock = socket.create_connection((server.host, server.port), timeout=10)
        self.send(tds.PKT_PRELOGIN, login.build_prelogin_request())
        self.read_message()
        self.send(tds.PKT_LOGIN7, login.build_login7(server.user, password or server.password,
                                                    database or server.database))
        self.login_reply = self.read_message()

    @property
    def logged_in(self) -> bool:
        return bytes((tds.TOKEN_LOGINACK,)) in self.login_reply

    def send(self, ptype: int, payload: bytes) -> None:
        self.sock.sendall(tds.packetize(ptype, payload, 4096))

    def send_batch(self, sql: str) -> None:
        self.send(tds.PKT_SQL_BATCH, tds.build_sql_batch(sql))

    def attention(self) -> None:
        self.sock.sendall(tds.HEADER.pack(tds.PKT_ATTENTION, tds.STATUS_EOM, 8, 0, 1, 0))

    def _recv(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("server closed the connection")
            data += chunk
        return bytes(data)

    def read_message(self) -> bytes:
        parts = []
        while True:
            header = self._recv(8)
            ptype, status, length = tds.parse_header(header)
            self.spid = tds.HEADER.unpack(header)[3]
            parts.append(self._recv(length - 8))
            if status & tds.STATUS_EOM:
                return b"".join(parts)

    def batch(self, sql: str) -> bytes:
        self.send_batch(sql)
        return self.read_message()

    def abort(self) -> None:
        """Close with a TCP reset, like a client that crashed."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


def is_attention_ack(message: bytes) -> bool:
    return message == tds.done(tds.DONE_ATTN)
