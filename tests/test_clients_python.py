"""The stand-in under other Python clients: python-tds (RPC sp_executesql, plain and TLS, its connection
pool's sp_reset_connection) next to pymssql, pymssql over TLS (full and login-only), and the errors
of the RPC path, which must be the batch path's for the T-SQL it carries.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Callable

import pymssql
import pytds
import pytest
import webtest
from beaker.middleware import SessionMiddleware
from helpers import new_sid

from beaker_mssql import MSSQLStore
from beaker_mssql.config import parse_settings
from beaker_mssql.errors import ConnectionFailedError, sqlserver_equivalent
from beaker_mssql.namespace import close_all
from beaker_mssql.pool import ConnectionPool
from beaker_mssql.testing import SQLServerStandIn

SESSIONS_DDL = ("CREATE TABLE [dbo].[sessions] ([sid] nvarchar(255) NOT NULL PRIMARY KEY, "
                "[session] nvarchar(max) NOT NULL, [expires] datetime NOT NULL)")


@pytest.fixture(scope="module")
def tls_server():
    """A stand-in with TLS (a self-signed certificate made at start) and a sessions table."""
    with SQLServerStandIn(tls=True) as server:
        server.execute(SESSIONS_DDL)
        yield server


@pytest.fixture(autouse=True)
def fresh_registry():
    yield
    close_all()


def pytds_connector(cafile: str | None = None, **extra: Any) -> Callable[..., Any]:
    """A ``connect`` for ConnectionPool that opens python-tds connections from pymssql's keywords."""

    def connect(**kw: Any) -> Any:
        return pytds.connect(dsn="localhost" if cafile else kw["server"], port=int(kw["port"]),
                             user=kw["user"], password=kw["password"], database=kw["database"],
                             login_timeout=kw["login_timeout"] or 10, timeout=kw["timeout"] or None,
                             appname="pytds-test", autocommit=True, cafile=cafile, **extra)

    return connect


def pytds_store(server: Any, table: str, cafile: str | None = None, **extra: Any) -> MSSQLStore:
    """MSSQLStore with its pool opening python-tds connections: every statement goes as sp_executesql."""
    settings = parse_settings({"url": server.url, "table": table})
    pool = ConnectionPool(settings.connection, connect=pytds_connector(cafile, **extra))
    return MSSQLStore.from_settings(settings, pool=pool)


def store_flow(store: MSSQLStore, other: MSSQLStore, clock_advance: Callable[[int], None]) -> None:
    """Every store method through ``store``, each result checked against ``other`` (pymssql)."""
    sids = [new_sid() for _ in range(3)]
    payload = json.dumps({"user": "ünï©ødé ✓", "big": "x" * 20000})
    for sid in sids:
        store.set(sid, payload, ttl=60)
    assert store.get(sids[0]) == other.get(sids[0]) == payload
    assert store.length() == other.length() == 3
    assert store.all() == other.all() == dict.fromkeys(sids, payload)
    assert store.touch(sids[1], ttl=3600) is True and other.touch("nope") is False
    assert store.touch("nope") is False
    assert store.destroy(sids[2]) is True and other.get(sids[2]) is None
    clock_advance(120)  # sids[0] expired, sids[1] not (touched)
    assert store.get(sids[0]) is None and other.get(sids[0]) is None
    assert store.destroy_expired() == 1
    assert store.all() == other.all() == {sids[1]: payload}
    other.set(sids[2], "from pymssql")
    assert store.get(sids[2]) == "from pymssql"
    assert store.clear() == 2 and other.length() == 0


@pytest.mark.parametrize("mode", ["plain", "tls", "tls-login-only"])
def test_pytds_runs_the_store_like_pymssql(standin, tls_server, mode):
    server = standin if mode == "plain" else tls_server
    if mode == "plain":
        server.execute(SESSIONS_DDL.replace("[sessions]", "[sessions_pytds]"))
        table = "sessions_pytds"
    else:
        table = "sessions"
    extra = {"enc_login_only": True} if mode == "tls-login-only" else {}
    assert server.wait_for_connections(0)
    server.reset_stats()
    server.log_sql = True
    store = pytds_store(server, table, server.tls_ca_file if mode != "plain" else None, **extra)
    other = MSSQLStore(url=server.url, table=table)
    try:
        store_flow(store, other, server.clock.advance)
        stats = server.stats()["per_connection"].values()
        used = {c["app_name"]: c["encryption"] for c in stats}
        assert used["pytds-test"] == {"plain": "off", "tls": "on", "tls-login-only": "login-only"}[mode]
        assert any(sql.startswith("RPC sp_executesql") for sql in server.sql_log)
    finally:
        server.log_sql = False
        server.sql_log.clear()
        server.reset()
        store.close()
        store.pool.close()  # a pool handed to from_settings stays open with the store's close()
        other.close()
        if mode == "plain":
            server.execute("DROP TABLE [sessions_pytds]")


def test_pytds_pool_resets_the_session(standin):
    """python-tds's pool calls sp_reset_connection on reuse: the open transaction rolls back."""
    standin.execute("CREATE TABLE reset_probe (n int)")
    try:
        kw = {"dsn": standin.host, "port": standin.port, "user": standin.user,
              "password": standin.password, "database": standin.database, "pooling": True,
              "autocommit": False, "login_timeout": 10}
        first = pytds.connect(**kw)
        cur = first.cursor()
        cur.execute("SET NOCOUNT ON; SET XACT_ABORT ON; INSERT INTO reset_probe VALUES (1)")
        cur.execute("SELECT @@SPID")
        spid = cur.fetchone()[0]
        first.close()  # back to pytds's pool, transaction still open on the server
        second = pytds.connect(**kw)
        cur = second.cursor()
        cur.execute("SELECT @@SPID, COUNT(*) FROM reset_probe")
        assert cur.fetchone() == (spid, 0)  # same session, the insert rolled back by the reset
        cur.execute("SELECT @@OPTIONS & 16384")  # XACT_ABORT is back to OFF
        assert cur.fetchone() == (0,)
        second.close()
    finally:
        # python-tds has no call to empty its process-wide pool: close what it kept, or the session's
        # stand-in would keep a connection other tests count.
        from pytds import connection_pool

        for kept in connection_pool.connection_pool._pool.values():
            for sock, _session in kept:
                sock.close()
        connection_pool.connection_pool._pool.clear()
        assert standin.wait_for_connections(0)
        standin.execute("DROP TABLE reset_probe")


@pytest.mark.parametrize("driver", ["pymssql", "pytds"])
def test_encrypt_require_runs_the_beaker_flow(tls_server, driver):
    def app(environ, start_response):
        session = environ["beaker.session"]
        if environ["PATH_INFO"] == "/login":
            session["user"] = environ["QUERY_STRING"]
            session.save()
        elif environ["PATH_INFO"] == "/logout":
            session.delete()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"user": session.get("user"), "id": session.id}).encode()]

    assert tls_server.wait_for_connections(0)  # earlier tests' clients are gone from the counts
    tls_server.reset_stats()
    config = {"session.type": "ext:mssql", "session.url": tls_server.url + "?encrypt=require",
              "session.table": "sessions", "session.data_serializer": "json", "session.secret": "s3cret",
              "session.driver": driver}
    if driver == "pytds":  # python-tds verifies the certificate: against the stand-in's own CA
        config["session.ca_file"] = tls_server.tls_ca_file
    web = webtest.TestApp(SessionMiddleware(app, config))
    sid = web.get("/login?alice").json["id"]
    assert web.get("/").json == {"user": "alice", "id": sid}
    assert tls_server.execute(f"SELECT COUNT(*) FROM sessions WHERE sid = N'{sid}'") == [(1,)]
    web.get("/logout")
    assert tls_server.execute(f"SELECT COUNT(*) FROM sessions WHERE sid = N'{sid}'") == [(0,)]
    per = tls_server.stats()["per_connection"].values()
    assert per and {c["encryption"] for c in per} == {"on"}
    assert {c["client_encryption"] for c in per} == {"01"}


@pytest.mark.parametrize(("encryption", "expected"), [(None, "login-only"), ("request", "login-only"),
                                                       ("off", "off"), ("require", "on")])
def test_pymssql_encryption_levels_against_tls(tls_server, encryption, expected):
    assert tls_server.wait_for_connections(0)
    tls_server.reset_stats()
    kwargs = {} if encryption is None else {"encryption": encryption}
    with tls_server.connect(autocommit=True, login_timeout=10, **kwargs) as conn:
        cursor = conn.cursor()
        cursor.execute("SELECT %s", ("still plain TDS inside",))
        assert cursor.fetchone() == ("still plain TDS inside",)
    (entry,) = tls_server.stats()["per_connection"].values()
    assert entry["encryption"] == expected


def test_encryption_required_by_the_client_without_tls_on_the_server(standin, tls_server):
    """A server without a certificate answers ENCRYPT_NOT_SUP ([MS-TDS] 2.2.6.5): the client gives up."""
    with pytest.raises(pymssql.OperationalError) as info:
        standin.connect(encryption="require", login_timeout=10)
    assert "20002" in str(info.value)
    assert standin.stats()["logins"] == 0
    with pytest.raises(Exception, match="(?i)encrypt"):
        pytds.connect(dsn="localhost", port=standin.port, user=standin.user, password=standin.password,
                      database=standin.database, cafile=tls_server.tls_ca_file, login_timeout=10)


def test_tls_certificate_can_be_configured(tmp_path):
    from beaker_mssql.testing.tls import make_self_signed

    cert, key = str(tmp_path / "c.pem"), str(tmp_path / "k.pem")
    make_self_signed(cert, key)
    with SQLServerStandIn(tls=(cert, key)) as server:
        assert server.tls_ca_file == cert
        with server.connect(encryption="require", login_timeout=10) as conn:
            cursor = conn.cursor()
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)
    with pytest.raises(ValueError, match="not a file"):
        SQLServerStandIn(tls=(str(tmp_path / "missing.pem"), key))


# -- the RPC path refuses what the batch path refuses ---------------------------------------------------


def _pytds(server: Any) -> Any:
    return pytds.connect(dsn=server.host, port=server.port, user=server.user, password=server.password,
                         database=server.database, autocommit=True, login_timeout=10)


def _number(exc: BaseException) -> Any:
    """The SQL Server error number: python-tds keeps it in msg_no, pymssql in args[0]."""
    if getattr(exc, "msg_no", None):
        return exc.msg_no  # type: ignore[attr-defined]
    return exc.args[0] if exc.args and isinstance(exc.args[0], int) else None


T_SQL_ERRORS = [
    ("SELECT * FROM no_such_table WHERE a = %s", (1,), 208),
    ("SELECT no_such_column FROM rpc_t WHERE id = %s", (1,), 207),
    ("SELECT FROM rpc_t WHERE id = %s", (1,), 156),
    ("SELECT @undeclared + %s", (1,), 137),
    ("INSERT INTO rpc_t (id, name) VALUES (%s, %s)", (1, "dup"), 2627),
    ("INSERT INTO rpc_t (id, name) VALUES (%s, %s)", (None, "x"), 515),
    ("SELECT CAST(%s AS int)", ("abc",), 245),
    ("SELECT 1 / %s", (0,), 8134),
    ("COMMIT TRANSACTION; SELECT %s", (1,), 3902),
    ("SELECT * FROM rpc_t ORDER BY %s OFFSET 0 ROWS", (1,), 102),
]


@pytest.mark.parametrize(("sql", "params", "number"), T_SQL_ERRORS, ids=[str(n) for *_, n in T_SQL_ERRORS])
def test_rpc_statements_fail_like_batches(standin, sql, params, number):
    standin.execute("IF OBJECT_ID('rpc_t') IS NULL "
                    "CREATE TABLE rpc_t (id int PRIMARY KEY, name nvarchar(10))")
    standin.execute("DELETE FROM rpc_t; INSERT INTO rpc_t VALUES (1, N'one')")
    with standin.connect(autocommit=True) as conn, pytest.raises(pymssql.Error) as batch_error:
        conn.cursor().execute(sql, params)  # pymssql: a SQL batch with the values inlined
    with _pytds(standin) as conn, pytest.raises(pytds.Error) as rpc_error:
        conn.cursor().execute(sql, params)  # python-tds: RPC sp_executesql with typed parameters
    # in SQL Server's numbers (Babelfish says 33557097 for some: errors.sqlserver_equivalent)
    batch = sqlserver_equivalent(_number(batch_error.value), str(batch_error.value))
    rpc = sqlserver_equivalent(_number(rpc_error.value), str(rpc_error.value))
    assert batch == rpc == number
    assert standin.execute("SELECT id, name FROM rpc_t") == [(1, "one")]  # nothing half-done either way


RPC_PARAMETER_ERRORS = [
    ("sp_executesql", ("SELECT @a", "@a int", 1, 2), 8144),
    ("sp_executesql", ("SELECT @a", "@a int"), 8178),
    ("sp_executesql", (5,), 214),
    ("sp_executesql", ("SELECT @a", 5), 214),
    ("sp_executesql", ("SELECT @a", "@a int", "abc"), 8114),
    ("sp_executesql", ("SELECT @d", "@d datetime", True), 206),
    ("sp_executesql", {"@statement": "SELECT @a", "@params": "@a int", "@b": 1}, 8145),
    ("sp_executesql", ("SELECT @a", "@a int", pytds.output(value=1, param_type="int")), 8162),
    ("sp_executesql", ("SELECT @a", "@a int, @a int", 1, 2), 134),
    ("sp_getapplock", {"@Resource": "r", "@LockMode": "Exclusive", "@Nope": 1}, 8145),
    ("sp_releaseapplock", {"@Resource": "never-taken", "@LockOwner": "Session"}, 1223),
    ("no_such_procedure", (), 2812),
    ("sp_execute", (12345,), 8179),
    ("sp_prepare", (), 201),
    ("sp_cursoropen", (), 2812),
]


@pytest.mark.parametrize(("proc", "args", "number"), RPC_PARAMETER_ERRORS,
                         ids=[f"{p}-{n}" for p, _, n in RPC_PARAMETER_ERRORS])
def test_rpc_parameter_errors(standin, proc, args, number):
    with _pytds(standin) as conn:
        cursor = conn.cursor()
        with pytest.raises(pytds.Error) as info:
            cursor.callproc(proc, args)
        assert _number(info.value) == number
        cursor.execute("SELECT %s", (1,))  # the connection is fine afterwards
        assert cursor.fetchone() == (1,)


def test_rpc_typed_parameters_output_and_return_status(standin):
    # datetime2 values come back as datetime (1/300 s): a known difference (README); .123 survives that
    when = datetime(2024, 2, 29, 13, 45, 6, 123000)
    with _pytds(standin) as conn:
        cursor = conn.cursor()
        cursor.callproc("sp_executesql", {"@stmt": "SELECT @a", "@params": "@a int", "@a": 5})
        assert cursor.fetchone() == (5,)
        cursor.execute("SELECT %s, %s, %s, %s, %s, %s, %s", (7, 2**40, True, 1.5, "ünï", when, None))
        assert cursor.fetchone() == (7, 2**40, True, 1.5, "ünï", when, None)
        out = cursor.callproc("sp_executesql", ("SET @doubled = @n * 2", "@n int, @doubled bigint OUTPUT",
                                                21, pytds.output(param_type="bigint")))
        assert out[-1] == 42 and cursor.return_value == 0
        cursor.callproc("sp_getapplock", {"@Resource": "rpc-lock", "@LockMode": "Exclusive",
                                          "@LockOwner": "Session", "@LockTimeout": 0})
        assert cursor.return_value == 0
        with _pytds(standin) as other:
            other_cursor = other.cursor()
            other_cursor.callproc("sp_getapplock", ("rpc-lock", "Exclusive", "Session", 0))
            # held by the first connection: timeout, -1 (Babelfish: -999, profile data)
            assert other_cursor.return_value == standin.profile.applock_nowait_busy
        cursor.callproc("sp_releaseapplock", ("rpc-lock", "Session"))
        assert cursor.return_value == 0


def test_attention_is_seen_inside_tls(tls_server):
    """python-tds cancels a query that outlives its timeout with an ATTENTION, encrypted like everything
    else: the stand-in must decrypt what arrived while the query waits on a lock to notice it."""
    tls_server.execute("CREATE TABLE tls_lock (id int PRIMARY KEY, v int); "
                       "INSERT INTO tls_lock VALUES (1, 1)")
    holder = tls_server.connect(autocommit=False)
    try:
        holder.cursor().execute("UPDATE tls_lock SET v = 2 WHERE id = 1")  # X lock held, not committed
        tls_server.reset_stats()
        with pytds.connect(dsn="localhost", port=tls_server.port, user=tls_server.user,
                           password=tls_server.password, database=tls_server.database, autocommit=True,
                           cafile=tls_server.tls_ca_file, timeout=1, login_timeout=10) as conn:
            cursor = conn.cursor()
            with pytest.raises(TimeoutError):
                # waits for the X lock (a writer waits under every engine profile; a reader would not
                # under READ_COMMITTED_SNAPSHOT)
                cursor.execute("UPDATE tls_lock SET v = 3 WHERE id = 1")
            cursor.execute("SELECT 42")  # the ATTENTION was acknowledged: the connection goes on
            assert cursor.fetchone() == (42,)
        assert tls_server.stats()["attentions"] == 1
    finally:
        holder.rollback()
        holder.close()
        tls_server.execute("DROP TABLE tls_lock")


@pytest.mark.engine_needs("bracket_escapes")
def test_rpc_parameter_declarations_cannot_smuggle_statements(standin):
    """@params holds declarations only: SQL Server answers anything else with a syntax error, and
    nothing of it runs (the stand-in builds a DECLARE from it, so this is checked before the engine)."""
    standin.execute("CREATE TABLE rpc_guard (n int)")
    try:
        with _pytds(standin) as conn:
            cursor = conn.cursor()
            with pytest.raises(pytds.Error) as info:
                cursor.callproc("sp_executesql", ("SELECT @a", "@a int; DROP TABLE rpc_guard", 1))
            assert _number(info.value) == 102
            with pytest.raises(pytds.Error) as info:
                cursor.callproc("sp_getapplock", {"@Resource = 'x'; DROP TABLE rpc_guard; --": 1})
            assert _number(info.value) == 8145
            with pytest.raises(pytds.Error) as info:
                cursor.callproc("x]; DROP TABLE rpc_guard; --", ())
            assert _number(info.value) == 2812
        assert standin.execute("SELECT COUNT(*) FROM rpc_guard") == [(0,)]
    finally:
        standin.execute("DROP TABLE rpc_guard")


def test_pytds_without_the_ca_file_refuses_the_self_signed_certificate(tls_server):
    """ca_file is what makes the connection above trusted: with the system's CAs it is refused."""
    store = MSSQLStore(url=tls_server.url + "?encrypt=require", table="sessions", driver="pytds", retries=0)
    try:
        with pytest.raises(ConnectionFailedError, match="certificate verify failed.*ca_file"):
            store.get("x")
    finally:
        store.close()


class HandshakeCutter:
    """A TCP relay in front of the TLS stand-in that, for its first ``cuts`` connections, forwards the
    client's PRELOGIN and the server's answer, then closes both sockets when the client's next message
    (the TLS ClientHello) arrives: a server going away under the handshake."""

    def __init__(self, target_port: int, cuts: int) -> None:
        import socket
        import threading

        self.target_port, self.cuts, self.connections = target_port, cuts, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            server = socket.create_connection(("127.0.0.1", self.target_port))
            cut = self.connections <= self.cuts
            for src, dst, first in ((client, server, True), (server, client, False)):
                t = threading.Thread(target=self._pump, args=(src, dst, cut and first, client, server),
                                     daemon=True)
                t.start()
                self.threads.append(t)

    @staticmethod
    def _pump(src: Any, dst: Any, cut: bool, *both: Any) -> None:
        messages = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                messages += 1
                if cut and messages == 2:  # the ClientHello: the "server" goes away
                    break
                dst.sendall(data)
        except OSError:
            pass
        for sock in both:
            try:
                sock.close()
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("retries", [0, 1])
@pytest.mark.parametrize("driver", ["pymssql", "pytds"])
def test_connection_closed_under_the_tls_handshake_is_a_transient_login_failure(tls_server, driver, retries):
    relay = HandshakeCutter(tls_server.port, cuts=1)
    url = tls_server.url.replace(f":{tls_server.port}/", f":{relay.port}/") + "?encrypt=require"
    verify = {"ca_file": tls_server.tls_ca_file} if driver == "pytds" else {}
    store = MSSQLStore(url=url, table="sessions", driver=driver, retries=retries, retry_budget=10, **verify)
    try:
        if retries == 0:
            with pytest.raises(ConnectionFailedError) as info:
                store.get("x")
            assert tls_server.password not in str(info.value)
        else:
            assert store.get("x") is None  # the second login went through
            assert relay.connections == 2
    finally:
        store.close()
        relay.close()
