"""One client connection of the stand-in: its thread, socket, TLS session and requests.

Why threads and not asyncio: the engine blocks (lock waits). Each connection gets one thread that reads a
request, runs it and writes the answer (socket -> engine -> socket); nothing is spawned per request.
An ATTENTION must still be seen *while* a batch runs or waits on a lock: the engine polls its cancel flag
between statements and every <= 50 ms of a lock wait, and that flag (``_CancelProbe``) then peeks at the
socket. One thread instead of a reader plus a worker saves a thread (and GIL) hand-off on every round
trip: ~40 us of ~140 us for a trivial batch through pymssql on a 2-core VM.

What each request type means is elsewhere: ``replies.py`` (SQL batches), ``rpc.py``, ``tm.py``,
``login.py``, ``tls.py``; this module holds what they share (faults, cancellation, reset, errors,
the transaction ENVCHANGEs).
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol

from . import tds
from .faults import make_error
from .login import (
    FEDAUTH_LIBRARY_SECURITYTOKEN,
    PL_FEDAUTHREQUIRED,
    Login7,
    build_prelogin_response,
    login_response,
    negotiate_packet_size,
    negotiate_tds_version,
    parse_fedauth,
    parse_login7,
    parse_prelogin,
)
from .replies import encode_events
from .results import Done, Event, Message, SQLError
from .rpc import RpcDecodeError, RpcRunner, parse_rpc, rpc_error_reply, sql_literal
from .tls import TlsChannel, server_encryption_answer
from .tm import parse_tm, tm_sql

if TYPE_CHECKING:
    from .server import SQLServerStandIn

log = logging.getLogger("beaker_mssql.testing")

SERVER_NAME = "STANDIN"


class SessionLike(Protocol):
    """The part of engine.EngineSession the wire layer uses (lets dev scripts plug in a fake engine)."""

    session_id: int
    database: str
    trancount: int
    last_tran_end: str

    def execute(self, batch: str, cancel: Optional[CancelFlag] = None, bind: Any = None) -> list[Event]: ...

    def reset(self, keep_transaction: bool = False) -> None: ...

    def close(self) -> None: ...


class CancelFlag(Protocol):
    """What the engine reads from the ``cancel`` argument of execute(): a threading.Event will do."""

    def is_set(self) -> bool: ...


def new_counters() -> dict[str, int]:
    return {"requests": 0, "statements": 0, "bytes_in": 0, "bytes_out": 0}


class _CancelProbe:
    """The cancel flag of one connection: set by close(), or when the client sent ATTENTION or went away.

    The connection's own thread runs the batch, so nobody reads the socket meanwhile; instead is_set()
    (which the engine calls between statements and in lock waits) looks at what the client sent since
    the request: the bytes already buffered, then -- at most every POLL_INTERVAL seconds -- a
    non-blocking peek at the socket. An ATTENTION packet, EOF or a socket error there sets the flag. The
    packet itself is left where it is: the serving loop reads it after the batch and acknowledges it,
    as SQL Server does. Only used from the connection's thread, except set() (close()).
    """

    POLL_INTERVAL = 0.002  # batches shorter than this never pay for a system call

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._flag = threading.Event()
        self._next_poll = 0.0
        # poll() where there is one: select() fails for descriptors >= FD_SETSIZE (1024 on Linux)
        self._poller: Optional[Any] = None
        if hasattr(select, "poll"):
            self._poller = select.poll()
            self._poller.register(conn.sock, select.POLLIN)

    def set(self) -> None:
        self._flag.set()

    def clear(self) -> None:
        self._flag.clear()

    def arm(self) -> None:
        """A batch starts: the first socket poll is due POLL_INTERVAL from now."""
        self._next_poll = time.monotonic() + self.POLL_INTERVAL

    def is_set(self) -> bool:
        if self._flag.is_set():
            return True
        now = time.monotonic()
        if now < self._next_poll:
            return False
        self._next_poll = now + self.POLL_INTERVAL
        return self.poll()

    def poll(self) -> bool:
        """Look now (no rate limit): True, and the flag set, if the client cancelled or went away."""
        if self._flag.is_set():
            return True
        conn = self._conn
        scanned = self._scan(conn.rbuf)
        if scanned is not None:
            return scanned
        sock = conn.sock
        if conn.channel is not None and conn.channel.established:
            # TLS: the socket holds records, not packets; decrypt what came (the serving loop reads
            # the packets from rbuf afterwards) and look again.
            try:
                if self._poller is not None:
                    readable = bool(self._poller.poll(0))
                else:
                    readable = bool(select.select([sock], [], [], 0)[0])
                raw = sock.recv(65536) if readable else None
            except (OSError, ValueError):
                raw = b""
            if raw is None:
                return False
            if not raw:
                self._flag.set()
                return True
            try:
                conn.rbuf += conn.channel.decrypt(raw)
            except tds.ProtocolError:
                self._flag.set()
                return True
            return bool(self._scan(conn.rbuf))
        try:
            if self._poller is not None:
                readable = bool(self._poller.poll(0))  # also reports hang-up and errors
            else:
                readable = bool(select.select([sock], [], [], 0)[0])
            if not readable:
                return False
            head = sock.recv(1, socket.MSG_PEEK)  # readable: returns at once, whatever the socket timeout
        except (OSError, ValueError):  # closed under us (stop()): ValueError for fd -1
            head = b""
        if not head or head[0] == tds.PKT_ATTENTION:
            self._flag.set()
            return True
        return False

    def _scan(self, buf: bytearray) -> Optional[bool]:
        """True (flag set) if an ATTENTION is among the whole packets already read; False if something
        else (garbage, or the rest of a packet) means the socket must not be looked at; None to look."""
        pos = 0
        n = len(buf)
        while pos + tds.HEADER_SIZE <= n:  # whole packets already read past the request
            if buf[pos] == tds.PKT_ATTENTION:
                self._flag.set()
                return True
            length = (buf[pos + 2] << 8) | buf[pos + 3]
            if length < tds.HEADER_SIZE:
                return False  # garbage: the serving loop reports it after the batch
            pos += length
        if pos != n:
            return False  # the socket holds the rest of a buffered packet, not the start of one
        return None

    def wait(self, timeout: float) -> bool:
        """Sleep ``timeout`` seconds (request latency fault) unless cancelled first; True if cancelled."""
        deadline = time.monotonic() + timeout
        while not self.poll():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._flag.wait(min(remaining, 0.01))
        return True


class Connection:
    """One client socket: one thread that reads and answers its requests; the EngineSession after login."""

    def __init__(self, server: SQLServerStandIn, sock: socket.socket, number: int) -> None:
        self.server = server
        self.sock = sock
        self.number = number
        self.cancel = _CancelProbe(self)
        self.rbuf = bytearray()  # bytes read from the socket and not yet consumed (see _CancelProbe)
        self.session: Optional[SessionLike] = None
        self.spid = 0
        self.tds_version = tds.TDS74
        self.packet_size = tds.DEFAULT_PACKET_SIZE
        self.counters = new_counters()
        self.info: dict[str, Any] = {}
        self.channel: Optional[TlsChannel] = None  # TLS session (handshaking or established)
        self.login_only_tls = False  # ENCRYPT_OFF negotiated: TLS ends after LOGIN7
        self.fedauth_required = False  # the client offered FEDAUTHREQUIRED in PRELOGIN
        self.rpc = RpcRunner()
        self.tran_descriptor = 0  # the current transaction's descriptor (ENVCHANGE 8/9/10), 0 = none
        self._descriptors = 0
        self.closed = threading.Event()
        self._close_lock = threading.Lock()
        self.worker = threading.Thread(target=self._serve_loop, name=f"standin-conn-{number}", daemon=True)

    def start(self) -> None:
        self.worker.start()

    def _serve_loop(self) -> None:
        """Read a message, answer it, repeat. An ATTENTION (read when no batch runs) gets its DONE(ATTN)."""
        buf = self.rbuf
        message: list[bytes] = []
        message_type = -1
        message_status = 0
        try:
            while True:
                while len(buf) < tds.HEADER_SIZE:
                    if not self._fill(buf, 65536):
                        return
                ptype, status, length = tds.parse_header(bytes(buf[:tds.HEADER_SIZE]))
                while len(buf) < length:
                    if not self._fill(buf, max(65536, length - len(buf))):
                        return
                payload = bytes(buf[tds.HEADER_SIZE:length])
                del buf[:length]
                self.counters["bytes_in"] += length
                if ptype == tds.PKT_ATTENTION:
                    # The batch it cancelled (if any) has stopped already: acknowledge, as SQL Server does.
                    self.server._count("attentions")
                    self.cancel.clear()
                    self._send(tds.done(tds.DONE_ATTN))
                    continue
                channel = self.channel
                if channel is not None and not channel.established:
                    if ptype != tds.PKT_PRELOGIN:
                        raise tds.ProtocolError(f"packet type {ptype} during the TLS handshake")
                    self._tls_handshake(channel, payload)
                    continue
                if message and ptype != message_type:
                    raise tds.ProtocolError("packet type changed inside a message")
                if not message:
                    message_status = status
                message_type = ptype
                message.append(payload)
                if status & tds.STATUS_EOM:
                    whole = message[0] if len(message) == 1 else b"".join(message)
                    message = []
                    if not self._dispatch(ptype, whole, message_status):
                        return
        except (OSError, tds.ProtocolError) as exc:
            if not self.closed.is_set():
                log.debug("connection %d: connection stops: %s", self.number, exc)
        except Exception:  # a bug in the stand-in: log it loudly, drop the client
            log.exception("connection %d: stand-in failure", self.number)
        finally:
            self.cancel.set()
            self.close()

    def _fill(self, buf: bytearray, size: int) -> bool:
        """Read more TDS bytes into ``buf`` (decrypting when TLS is on); False at end of stream."""
        data = self.sock.recv(size)
        if not data:
            return False
        channel = self.channel
        if channel is not None and channel.established:
            buf += channel.decrypt(data)
            return not channel.eof
        buf += data
        return True

    def _dispatch(self, ptype: int, payload: bytes, status: int = tds.STATUS_EOM) -> bool:
        """Answer one whole message; False means the connection is to be dropped."""
        if ptype == tds.PKT_SQL_BATCH:
            return self._batch(payload, status)
        if ptype == tds.PKT_RPC:
            return self._rpc(payload, status)
        if ptype == tds.PKT_TRANSACTION_MANAGER:
            return self._tm(payload, status)
        if ptype == tds.PKT_PRELOGIN:
            self._prelogin(payload)
            return True
        if ptype == tds.PKT_LOGIN7:
            return self._login(payload)
        self._count_request()
        self._send(tds.error_reply(
            Message(50000, 16, 1, f"The stand-in does not support TDS packet type {ptype} "
                                  "(bulk load, SSPI)."),
            SERVER_NAME))
        return True

    def _send(self, payload: bytes, ptype: int = tds.PKT_TABULAR) -> None:
        data = tds.packetize(ptype, payload, self.packet_size, self.spid)
        self.counters["bytes_out"] += len(data)
        channel = self.channel
        if channel is not None and channel.established:
            data = channel.encrypt(data)
        self.sock.sendall(data)

    def _prelogin(self, payload: bytes) -> None:
        """PRELOGIN: agree on encryption ([MS-TDS] 2.2.6.5); with TLS on, the handshake follows."""
        if self.session is not None or self.channel is not None:
            raise tds.ProtocolError("PRELOGIN after the login has started")
        options = parse_prelogin(payload)
        # The client offers an Entra ID token: Azure SQL tells it to echo that in LOGIN7 ([MS-TDS] 2.2.6.5);
        # SQL Server leaves the option out (profiles.py: prelogin_fedauth_required).
        offered = options.get(PL_FEDAUTHREQUIRED, b"")[:1] == b"\x01"
        self.fedauth_required = offered and self.server.profile.prelogin_fedauth_required
        client = options.get(tds.PL_ENCRYPTION, b"")[:1]
        self.info["client_encryption"] = client.hex() or "00"
        cert = self.server._certificate
        answer = server_encryption_answer(client[0] if client else None, cert is not None)
        self.info["encryption"] = {tds.ENCRYPT_ON: "on", tds.ENCRYPT_OFF: "login-only"}.get(answer, "off")
        self._send(build_prelogin_response(answer, self.fedauth_required))
        if cert is not None and answer in (tds.ENCRYPT_ON, tds.ENCRYPT_OFF):
            self.channel = TlsChannel(cert.context)
            self.login_only_tls = answer == tds.ENCRYPT_OFF

    def _tls_handshake(self, channel: TlsChannel, records: bytes) -> None:
        """One PRELOGIN packet of the handshake in; the server's flight out, wrapped the same way."""
        reply = channel.handshake(records)
        if reply:
            data = tds.packetize(tds.PKT_PRELOGIN, reply, self.packet_size, self.spid)
            self.counters["bytes_out"] += len(data)
            self.sock.sendall(data)
        if channel.established and self.rbuf:
            # What the client sent after its last handshake packet is already TLS records.
            pending = bytes(self.rbuf)
            self.rbuf.clear()
            self.rbuf += channel.decrypt(pending)

    def _login(self, payload: bytes) -> bool:
        """LOGIN7 -> LOGINACK and friends, or ERROR 18456/4060/... and a closed socket."""
        server = self.server
        if self.login_only_tls:
            # Login-only encryption: the LOGIN7 came encrypted, everything after it goes in the clear.
            self.channel = None
            self.login_only_tls = False
            if self.rbuf:
                raise tds.ProtocolError("client sent more after a login-only-encrypted LOGIN7")
        login = parse_login7(payload)
        self.tds_version = negotiate_tds_version(login.tds_version)
        delay = server.faults.login_delay
        if delay > 0 and self.closed.wait(delay):
            return False
        # A login that names no database asks for its default one (the stand-in's ``database``).
        error = server.faults.take_login_refusal(login.user, login.database or server.database, SERVER_NAME)
        principal = login.user
        if tds.FEATURE_FEDAUTH in login.features:
            principal, error = self._fedauth_principal(login, error)
        elif error is None and not server._check_credentials(login.user, login.password):
            error = make_error(18456, login.user)
        if error is None:
            try:
                self.session = server._engine_connect(login.database or None, principal)
            except SQLError as exc:
                # SQL Server adds 18456 after 4060; pymssql would then report 18456 and hide the
                # useful number, so the stand-in sends only the database error.
                error = exc
        if error is not None:
            server._count_login(ok=False, error=error.number)
            self._send(tds.error_reply(error.to_message(), SERVER_NAME))
            log.info("refused login of %r (error %d)", login.user, error.number)
            return False
        assert self.session is not None
        self.spid = self.session.session_id
        self.info.update(user=principal, app_name=login.app_name, host_name=login.hostname,
                         database=self.session.database, tds_version=f"0x{self.tds_version:08X}",
                         features=sorted(login.features))
        packet_size = negotiate_packet_size(login.packet_size)
        # Registered before the LOGINACK goes out: a client that has it finds its SPID in stats().
        server._register(self)
        server._count_login(ok=True)
        self._send(login_response(self.session.database, packet_size, self.tds_version, SERVER_NAME,
                                      login.features))
        self.packet_size = packet_size
        return True

    def _fedauth_principal(self, login: Login7, error: Optional[SQLError]) -> tuple[str, Optional[SQLError]]:
        """The Entra ID principal of a LOGIN7 carrying a FEDAUTH token, or the login error.

        [MS-TDS] 3.3.5.1 (Login Ready): fFedAuthEcho must match the server's PRELOGIN FEDAUTHREQUIRED,
        else an ERROR and a closed connection. A token login carries no user name or password
        ([MS-TDS] 2.2.6.4). A wrong or expired token is SQL Server's 18456 with the principal shown as
        '<token-identified principal>' (Azure SQL's wording; learn.microsoft.com/azure/azure-sql/
        database/troubleshoot-common-errors-issues, "Login failed for user '<token-identified principal>'").
        """
        anonymous = "<token-identified principal>"
        fedauth = parse_fedauth(login.features[tds.FEATURE_FEDAUTH])
        if error is not None:
            return anonymous, error
        if fedauth.echo != self.fedauth_required:
            return anonymous, make_error(18456, anonymous, "Login failed: the FEDAUTH echo bit does not "
                                         "match the PRELOGIN FEDAUTHREQUIRED answer.")
        if fedauth.library != FEDAUTH_LIBRARY_SECURITYTOKEN:
            return anonymous, make_error(18456, anonymous, "Login failed: this server accepts only the "
                                         "security-token federated authentication library.")
        if login.user or login.password:
            return anonymous, make_error(18456, login.user, "Login failed: a user name or password cannot "
                                         "be sent with an access token.")
        principal = self.server._check_token(fedauth.token)
        if principal is None:
            return anonymous, make_error(18456, anonymous)
        return principal, None

    def _count_request(self) -> None:
        self.counters["requests"] += 1
        self.server._count("requests")

    def _batch(self, payload: bytes, status: int = tds.STATUS_EOM) -> bool:
        """Run one SQL batch; False means the connection is to be dropped."""
        sql = tds.sql_batch_text(payload, self.tds_version)
        if self.server.log_sql:
            self.server._log_sql(sql)
        return self._request(status, lambda session: encode_events(
            session.execute(sql, self.cancel), SERVER_NAME), sql)

    def _rpc(self, payload: bytes, status: int) -> bool:
        """Run an RPC request (sp_executesql, sp_prepare/sp_execute, procedures): see rpc.py."""
        try:
            calls = parse_rpc(payload, self.tds_version)
        except RpcDecodeError as exc:
            self._count_request()
            self._send(rpc_error_reply(exc, SERVER_NAME))
            return True
        # "RPC sp_executesql: <statement>": what log_sql records and reply-cut faults match
        labels = [f"RPC {call.display}: " + " ".join(
            str(p.value) for p in call.params[:1] if isinstance(p.value, str)) for call in calls]
        if self.server.log_sql:
            for call, label in zip(calls, labels):
                # The parameter values too (as T-SQL literals), so a test reads what was sent whichever
                # driver sent it: pymssql inlines values into a batch, python-tds/tedious pass them here.
                values = ", ".join(f"{p.name}={sql_literal(p.value)}" for p in call.params[2:])
                self.server._log_sql(f"{label} -- {values}" if values else label)
        return self._request(status, lambda session: self.rpc.run(session, calls, self.cancel, SERVER_NAME),
                             "\n".join(labels) or "RPC")

    def _tm(self, payload: bytes, status: int) -> bool:
        """A transaction-manager request: the equivalent T-SQL on the batch path (see tm.py)."""
        request = parse_tm(payload, self.tds_version)
        sql = tm_sql(request)
        if sql is None:
            self._count_request()
            self._send(tds.error_reply(Message(
                8509 if request.kind == 6 else 50000, 16, 1,
                f"The stand-in does not support distributed transactions (transaction-manager request "
                f"{request.kind})."), SERVER_NAME))
            return True
        if self.server.log_sql:
            self.server._log_sql(sql)

        def work(session: SessionLike) -> bytes:
            # A TM request is answered by its messages and one DONE, whatever statements it took here.
            events = session.execute(sql, self.cancel)
            messages: list[Event] = [e for e in events if isinstance(e, Message)]
            failed = any(isinstance(e, Message) and e.is_error for e in events)
            return encode_events([*messages, Done(error=failed)], SERVER_NAME)

        return self._request(status, work, sql)

    def _request(self, status: int, work: Callable[[SessionLike], bytes], label: str) -> bool:
        """What every request shares: faults, cancel, reset, errors, transaction ENVCHANGEs."""
        server = self.server
        self._count_request()
        session = self.session
        if session is None:
            raise tds.ProtocolError("request before login")
        faults = server.faults
        cancel = self.cancel
        if faults.active:
            if faults.take_drop():
                log.info("connection %d: dropping the connection on request (fault)", self.number)
                return False
            delay = faults.request_latency
            if delay > 0 and cancel.wait(delay):
                return True  # cancelled before it ran: the ATTENTION gets the only answer
        if cancel.is_set():
            return True  # cancelled before it ran (close()): nothing to answer
        prefix = b""
        if status & (tds.STATUS_RESETCONNECTION | tds.STATUS_RESETCONNECTIONSKIPTRAN):
            prefix = self._reset(session, keep_transaction=not status & tds.STATUS_RESETCONNECTION)
        trancount = session.trancount
        cancel.arm()
        try:
            reply = work(session)
        except server._cancelled as exc:
            log.debug("connection %d: request cancelled: %s", self.number, exc)
            return True
        except SQLError as exc:
            events: list[Event] = [exc.to_message(), Done(error=True)]
            reply = encode_events(events, SERVER_NAME)
        except Exception as exc:
            if self.cancel.is_set():
                return True
            log.exception("connection %d: engine failure on %r", self.number, label[:200])
            events = [Message(50000, 16, 1, f"Stand-in engine failure: {type(exc).__name__}: {exc}"),
                      Done(error=True)]
            reply = encode_events(events, SERVER_NAME)
        if faults.active:
            cut = faults.take_reply_cut(label)
            if cut is not None:
                ran, hold = cut
                ran.set()
                if hold is not None:
                    while not hold.wait(0.05) and not self.closed.is_set():
                        pass
                log.info("connection %d: request ran; closing without a reply (fault)", self.number)
                return False
        if trancount != session.trancount and self.tds_version >= tds.TDS72:
            reply = self._with_tran_envchange(reply, trancount, session)
        self._send(prefix + reply if prefix else reply)
        return True

    def _reset(self, session: SessionLike, keep_transaction: bool) -> bytes:
        """RESETCONNECTION: sp_reset_connection before the request, acknowledged by ENVCHANGE 18."""
        trancount = session.trancount
        database = session.database
        session.reset(keep_transaction)
        out = b""
        if trancount and not session.trancount:
            out = tds.envchange_binary(tds.ENV_ROLLBACK_TRAN, b"", self._descriptor_bytes())
            self.tran_descriptor = 0
        if session.database != database:
            out += tds.database_changed(session.database, database)
        return out + tds.envchange_binary(tds.ENV_RESET_ACK, b"", b"")

    def _descriptor_bytes(self) -> bytes:
        return self.tran_descriptor.to_bytes(8, "little")

    def _with_tran_envchange(self, reply: bytes, before: int, session: SessionLike) -> bytes:
        """ENVCHANGE begin/commit/rollback (8/9/10, with the 8-byte transaction descriptor) when the request
        started or ended the transaction, placed before the request's final DONE/DONEPROC as the client
        needs it while the request is still open ([MS-TDS] 2.2.7.9). SQL Server sends it right after
        the statement that did it; clients only keep the descriptor."""
        token = b""
        if before and not session.trancount:
            kind = tds.ENV_COMMIT_TRAN if session.last_tran_end == "commit" else tds.ENV_ROLLBACK_TRAN
            token = tds.envchange_binary(kind, b"", self._descriptor_bytes())
            self.tran_descriptor = 0
        elif not before and session.trancount:
            self._descriptors += 1
            self.tran_descriptor = (self.spid << 32) | self._descriptors
            token = tds.envchange_binary(tds.ENV_BEGIN_TRAN, self._descriptor_bytes(), b"")
        if not token or len(reply) < 13:
            return reply
        return reply[:-13] + token + reply[-13:]

    def close(self) -> None:
        """Close the socket; the worker then closes the engine session (rolling back an open transaction).

        Called from any thread; waits (briefly) for the worker so that after stop() no transaction of a
        dropped client is still holding locks.
        """
        with self._close_lock:
            first = not self.closed.is_set()
            self.closed.set()
        if first:
            self.cancel.set()
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()
        if threading.current_thread() is self.worker or not self.worker.is_alive():
            self._release()
        else:
            self.worker.join(5)
            if self.worker.is_alive():
                log.warning("connection %d: worker still busy 5 s after close", self.number)

    def _release(self) -> None:
        with self._close_lock:
            session, self.session = self.session, None
        if session is not None:
            try:
                session.close()
            except Exception:
                log.exception("connection %d: closing the engine session failed", self.number)
        self.server._unregister(self)
