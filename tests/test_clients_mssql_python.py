"""Microsoft's mssql-python driver (ODBC Driver 18 for SQL Server inside its wheel) against the stand-in.

Issue 13 asked to try it next to python-tds before choosing the Entra ID driver; README "Why python-tds"
states what these tests measured. They drive the real driver through login, TLS, access tokens,
transactions and every statement shape beaker_mssql/sql.py sends (mssql-python's paramstyle is pyformat,
like pymssql's, and it sends them as sp_prepexec with typed parameters).

Not in the test extra: the driver's default provider (ODBC Driver 18) needs the system library
libltdl.so.7 (Debian: ``apt-get install libltdl7``), and the wheel pulls azure-identity into the test
environment. To run them::

    .venv/bin/pip install mssql-python && apt-get install libltdl7
    .venv/bin/python -m pytest tests/test_clients_mssql_python.py

Without libltdl they run on the driver's other provider, its Rust TDS driver (no system library; or
``MSSQL_PYTHON_NATIVE_PROVIDER=mssql-odbc``); one test runs the other provider in a child process.
"""

from __future__ import annotations

import ctypes
import json
import os
import struct
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from beaker_mssql import sql as S
from beaker_mssql.config import TableName
from beaker_mssql.testing import SQLServerStandIn

mssql_python = pytest.importorskip(
    "mssql_python",
    reason="mssql-python is not installed (pip install mssql-python; kept out of the test extra, "
           "see README 'Why python-tds')")

PROVIDERS = ("msodbcsql18", "mssql-odbc")  # mssql_python/odbc_provider.py: ODBC Driver 18 / Rust driver
SQL_COPT_SS_ACCESS_TOKEN = 1256  # msodbcsql.h: a pre-acquired Entra ID token, set before connecting


def _provider_cannot_load(provider: str) -> str | None:
    """Why ``provider`` cannot load here, or None. ODBC Driver 18's libmsodbcsql-18 links
    libltdl.so.7, which the wheel does not bundle (mssql-python README, Linux: ``apt-get install -y
    libltdl7 libkrb5-3 libgssapi-krb5-2``); without it every connect fails "Failed to load the driver"."""
    if provider != "msodbcsql18":
        return None
    for library in ("libltdl.so.7", "libkrb5.so.3", "libgssapi_krb5.so.2"):
        try:
            ctypes.CDLL(library)
        except OSError:
            return (f"mssql-python's ODBC Driver 18 needs the system library {library} (Debian: apt-get "
                    "install libltdl7 libkrb5-3 libgssapi-krb5-2)")
    return None


# The provider this process uses (chosen once per process): the one asked for, else the default ODBC
# Driver 18 where it loads, else the Rust driver, which needs no system library.
PROVIDER = (os.environ.get("MSSQL_PYTHON_NATIVE_PROVIDER", "").strip().lower()
            or ("msodbcsql18" if _provider_cannot_load("msodbcsql18") is None else "mssql-odbc"))
OTHER_PROVIDER = PROVIDERS[1] if PROVIDER == PROVIDERS[0] else PROVIDERS[0]
_CANNOT_LOAD = _provider_cannot_load(PROVIDER)
pytestmark = [pytest.mark.standin_only,
              pytest.mark.skipif(_CANNOT_LOAD is not None, reason=_CANNOT_LOAD or "")]


@pytest.fixture(scope="module")
def server() -> Iterator[SQLServerStandIn]:
    """A stand-in with TLS (ODBC Driver 18 encrypts by default) that logs what the driver sends."""
    # The store keeps its own pool; mssql-python pools by default (close() would keep the socket).
    mssql_python.pooling(enabled=False)
    with pytest.MonkeyPatch.context() as patch, SQLServerStandIn(tls=True, log_sql=True) as standin:
        patch.setenv("MSSQL_PYTHON_NATIVE_PROVIDER", PROVIDER)
        yield standin


@pytest.fixture
def srv(server: SQLServerStandIn) -> Iterator[SQLServerStandIn]:
    server.reset()
    yield server
    server.reset()


def conn_str(server: SQLServerStandIn, *extra: str, password: str | None = None, database: str = "",
             credentials: bool = True) -> str:
    parts = [f"Server=127.0.0.1,{server.port}", f"Database={database or server.database}"]
    if credentials:
        parts += [f"UID={server.user}", f"PWD={server.password if password is None else password}"]
    return ";".join(parts + list(extra or ("Encrypt=yes", "TrustServerCertificate=yes")))


def connect(server: SQLServerStandIn, *extra: str, **kwargs: Any) -> Any:
    kwargs.setdefault("autocommit", True)
    return mssql_python.connect(conn_str(server, *extra), **kwargs)


def last_connection(server: SQLServerStandIn) -> dict[str, Any]:
    per = server.stats()["per_connection"]
    return per[max(per)]


def token_attr(token: str) -> dict[int, bytes]:
    """SQL_COPT_SS_ACCESS_TOKEN's value: a 4-byte little-endian length, then the token in UTF-16LE."""
    raw = token.encode("utf-16-le")
    return {SQL_COPT_SS_ACCESS_TOKEN: struct.pack("<I", len(raw)) + raw}


def rows(cur: Any, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    cur.execute(sql, params)
    return [tuple(r) for r in cur.fetchall()]


def run(cur: Any, sql: str, params: dict[str, Any] | None = None) -> int:
    """Execute, then read every later result: ODBC reports an error of a later statement in the batch
    only when its result is reached (SQLMoreResults), as pyodbc does. The first statement's rowcount."""
    cur.execute(sql, params)
    count = cur.rowcount
    while cur.nextset():
        pass
    return int(count)


# -- login ------------------------------------------------------------------------------------------------


def test_login_encrypted_by_default(srv):
    """ODBC Driver 18 asks for encryption (Encrypt=yes is its default) and offers TDS 7.4."""
    conn = connect(srv)
    try:
        assert rows(conn.cursor(), "SELECT SUSER_SNAME(), DB_NAME()") == [("sa", srv.database)]
    finally:
        conn.close()
    info = last_connection(srv)
    assert (info["encryption"], info["client_encryption"], info["tds_version"]) == ("on", "01", "0x74000004")
    assert info["app_name"] == "MSSQL-Python"


def test_wrong_password_is_18456_and_never_shown(srv, caplog):
    """Neither the exception nor what the driver logs about the failed login (logger "mssql_python")
    shows a password, the right one or a wrong one."""
    caplog.set_level("DEBUG", logger="mssql_python")
    connect(srv).close()
    wrong = "Wr0ng-" + uuid.uuid4().hex
    with pytest.raises(mssql_python.OperationalError) as info:
        mssql_python.connect(conn_str(srv, "Encrypt=yes", "TrustServerCertificate=yes", password=wrong))
    text = f"{info.value} {info.value!r}"
    assert "Login failed for user 'sa'." in text
    assert srv.stats()["last_login_error"] == 18456
    assert caplog.records  # the driver did log
    for secret in (wrong, srv.password):
        assert secret not in text and secret not in caplog.text


def test_missing_database_is_4060(srv):
    """4060 (Babelfish profile: 911, profiles.py). ConnectRetryCount=0: measured, the Rust provider
    otherwise logs in again after 10 s (ConnectRetryInterval) on a 4060; ODBC Driver 18 does not. A store
    would leave retries to retry.py."""
    with pytest.raises(mssql_python.Error) as info:
        mssql_python.connect(conn_str(srv, "Encrypt=yes", "TrustServerCertificate=yes", "ConnectRetryCount=0",
                                      database="nodb"))
    number = srv.profile.missing_database_error
    assert srv.stats()["last_login_error"] == number
    expected = {4060: 'Cannot open database "nodb" requested by the login.',
                911: "Database 'nodb' does not exist."}
    assert expected[number] in str(info.value)


def test_errors_carry_no_server_error_number(srv):
    """What a driver = mssql-python would have to live with (mssql-python 1.16, its issue #581):
    exceptions carry the class picked from the SQLSTATE and the text, not SQL Server's error number, so
    retry.py could not tell 40613 (transient) from any other 42000 error except by its English text."""
    conn = connect(srv)
    try:
        cur = conn.cursor()
        srv.faults.raise_error(1205, pattern="SELECT 1205")
        with pytest.raises(mssql_python.OperationalError) as deadlock:  # SQLSTATE 40001
            cur.execute("SELECT 1205")
        srv.faults.raise_error(40613, pattern="SELECT 40613")
        with pytest.raises(mssql_python.ProgrammingError) as failover:  # SQLSTATE 42000, like a syntax error
            cur.execute("SELECT 40613")
        for exc in (deadlock.value, failover.value):
            assert not any(isinstance(a, int) for a in exc.args)
            assert getattr(exc, "number", None) is None
        assert "deadlocked" in str(deadlock.value) and "not currently available" in str(failover.value)
    finally:
        conn.close()


# -- TLS ----------------------------------------------------------------------------------------------------


def test_tls_modes(srv, monkeypatch):
    for extra, expected in ((("Encrypt=yes", "TrustServerCertificate=yes"), ("on", "01")),
                            (("Encrypt=no",), ("login-only", "00"))):
        conn = connect(srv, *extra)
        try:
            assert rows(conn.cursor(), "SELECT 1") == [(1,)]
        finally:
            conn.close()
        info = last_connection(srv)
        assert (info["encryption"], info["client_encryption"]) == expected, extra
    with pytest.raises(mssql_python.OperationalError, match="certificate verify failed"):
        connect(srv, "Encrypt=yes")
    if PROVIDER == "msodbcsql18":
        # Verified: ODBC Driver 18 trusts the stand-in's self-signed certificate only through OpenSSL's
        # SSL_CERT_FILE (it has no CA-file keyword; its ServerCertificate= applies to Encrypt=strict only),
        # and matches the host name against the certificate's DNS name, not its IP address.
        monkeypatch.setenv("SSL_CERT_FILE", srv.tls_ca_file)
        connect(srv, "Encrypt=yes", "HostNameInCertificate=localhost").close()
        with pytest.raises(mssql_python.OperationalError, match="certificate verify failed"):
            connect(srv, "Encrypt=yes", "HostNameInCertificate=other.example")
    else:  # the Rust driver pins the certificate file itself with Encrypt=yes
        connect(srv, "Encrypt=yes", f"ServerCertificate={srv.tls_ca_file}").close()


def test_strict_encryption_is_refused(srv):
    """Encrypt=strict is TDS 8.0 (TLS before PRELOGIN), which the stand-in does not serve."""
    with pytest.raises(mssql_python.OperationalError):
        connect(srv, "Encrypt=strict", "TrustServerCertificate=yes")


# -- Entra ID access tokens --------------------------------------------------------------------------------


def test_access_token_login(srv):
    token = srv.issue_token("app@contoso.onmicrosoft.com", lifetime=600)
    conn = mssql_python.connect(conn_str(srv, "Encrypt=yes", "TrustServerCertificate=yes", credentials=False),
                                autocommit=True, attrs_before=token_attr(token))
    try:
        assert rows(conn.cursor(), "SELECT SUSER_SNAME()") == [("app@contoso.onmicrosoft.com",)]
    finally:
        conn.close()
    assert 2 in last_connection(srv)["features"]  # LOGIN7 FEDAUTH ([MS-TDS] 2.2.6.4)

    srv.clock.advance(601)  # expired in stand-in time
    with pytest.raises(mssql_python.OperationalError) as info:
        mssql_python.connect(conn_str(srv, "Encrypt=yes", "TrustServerCertificate=yes", credentials=False),
                             attrs_before=token_attr(token))
    assert "Login failed for user '<token-identified principal>'." in str(info.value)
    assert token not in str(info.value)


def test_access_token_over_login_only_tls(srv):
    """Encrypt=no: only LOGIN7 is encrypted. Measured: ODBC Driver 18 then sends fFedAuthEcho = 0 even
    after an answered FEDAUTHREQUIRED 0x01 (the azure profile), which [MS-TDS] 3.3.5.5 makes the server
    refuse; its Rust driver echoes 1. Under the SQL Server profile nothing is answered and both log in.
    Azure SQL encrypts every connection, so the refused case does not arise there."""
    token = srv.issue_token("app@contoso.onmicrosoft.com")

    def login() -> list[tuple[Any, ...]]:
        conn = mssql_python.connect(conn_str(srv, "Encrypt=no", credentials=False), autocommit=True,
                                    attrs_before=token_attr(token))
        try:
            return rows(conn.cursor(), "SELECT SUSER_SNAME()")
        finally:
            conn.close()

    if srv.profile.prelogin_fedauth_required and PROVIDER == "msodbcsql18":
        with pytest.raises(mssql_python.OperationalError, match="FEDAUTH echo bit"):
            login()
    else:
        assert login() == [("app@contoso.onmicrosoft.com",)]
        assert last_connection(srv)["encryption"] == "login-only"


def test_token_provider(srv):
    """mssql-python's own Entra ID hook: any object with get_token(scope) (an azure-identity credential)."""

    class Credential:
        def __init__(self, token: str) -> None:
            self.token, self.scopes = token, []

        def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            self.scopes.append(scopes)
            return type("AccessToken", (), {"token": self.token, "expires_on": 2**31 - 1})()

    credential = Credential(srv.issue_token("svc@contoso.onmicrosoft.com"))
    conn = mssql_python.connect(conn_str(srv, "Encrypt=yes", "TrustServerCertificate=yes", credentials=False),
                                autocommit=True, token_provider=credential)
    try:
        assert rows(conn.cursor(), "SELECT SUSER_SNAME()") == [("svc@contoso.onmicrosoft.com",)]
    finally:
        conn.close()
    assert credential.scopes == [("https://database.windows.net/.default",)]


# -- transactions and the store's statements ---------------------------------------------------------------


@pytest.fixture
def table(srv) -> Iterator[TableName]:
    name = TableName("dbo", f"t_{uuid.uuid4().hex[:12]}")
    srv.execute(S.create_table_sql(name))
    yield name
    srv.execute(S.drop_table_sql(name))


def test_transactions_are_tm_requests(srv, table):
    conn = connect(srv, autocommit=False)
    try:
        cur = conn.cursor()
        srv.reset_stats()
        cur.execute(f"INSERT INTO {table.quoted} VALUES (%(sid)s, N'x', GETUTCDATE())", {"sid": "a"})
        conn.rollback()
        assert rows(cur, f"SELECT COUNT(*) FROM {table.quoted}") == [(0,)]
        cur.execute(f"INSERT INTO {table.quoted} VALUES (%(sid)s, N'x', GETUTCDATE())", {"sid": "b"})
        conn.commit()
    finally:
        conn.close()
    assert srv.execute(f"SELECT sid FROM {table.quoted}") == [("b",)]
    # TM_ROLLBACK_XACT / TM_COMMIT_XACT with a new transaction begun (fBeginXact), as the stand-in logs them
    assert any(line.startswith("ROLLBACK TRANSACTION") for line in srv.sql_log)
    assert any(line.startswith("COMMIT TRANSACTION") for line in srv.sql_log)


def test_every_store_statement(srv, table):
    """beaker_mssql/sql.py's statements, unchanged, with pyformat parameters: the results a store reads."""
    st = S.statements_for(table)
    srv.clock.freeze()  # seconds left are exact, however slow the machine (the srv fixture thaws it)
    conn = connect(srv)
    try:
        cur = conn.cursor()
        run(cur, S.create_table_sql(table))  # idempotent: the table exists already
        run(cur, st.set, {"sid": "Abc", "data": "one", "ttl": 60})  # 60: sent as @P tinyint
        assert run(cur, st.set, {"sid": "Abc", "data": "two", "ttl": 300}) == 1  # smallint
        (got,) = rows(cur, st.get, {"sid": "Abc"})
        assert got[0] == "two" and isinstance(got[1], bytes) and len(got[1]) == 32 and got[2] == 300
        assert rows(cur, st.get, {"sid": "ABC"}) == []  # exact match only
        version = got[1]
        update = {"sid": "Abc", "data": "three", "ttl": 70_000, "version": version}  # 70_000: int
        assert run(cur, st.save_update, update) == 1
        assert run(cur, st.save_update, {"sid": "Abc", "data": "four", "ttl": 60, "version": version}) == 0
        big = "é" * 50_000  # nvarchar(max): sent as PLP
        run(cur, st.save_insert, {"sid": "new", "data": big, "ttl": 60})
        assert rows(cur, st.get, {"sid": "new"})[0][0] == big
        # A live row: the INSERT half fails with 2627, reported when its result is read (nextset).
        cur.execute(st.save_insert, {"sid": "new", "data": "again", "ttl": 60})
        with pytest.raises(mssql_python.IntegrityError, match="Violation of PRIMARY KEY constraint"):
            while cur.nextset():
                pass
        assert rows(cur, "SELECT 1") == [(1,)]  # the connection carries on
        assert run(cur, st.touch, {"sid": "Abc", "ttl": 120}) == 1
        assert rows(cur, st.length) == [(2,)]
        assert [r[0] for r in rows(cur, st.all)] == ["Abc", "new"]
        assert rows(cur, st.keys_prefix, {"pattern": S.escape_like("ne") + "%"}) == [("new",)]
        assert rows(cur, st.getapplock, {"resource": "r1", "timeout_ms": 0}) == [(0,)]
        assert rows(cur, st.releaseapplock, {"resource": "r1"}) == [(0,)]
        assert rows(cur, st.columns, {"schema": table.schema, "name": table.name}) == [
            ("sid", "nvarchar", 255, "NO"), ("session", "nvarchar", -1, "NO"),
            ("expires", "datetime", None, "NO")]
        assert {(r[3], r[4]) for r in rows(cur, st.indexes, {"object": table.quoted})} == {
            (1, "sid"), (1, "expires")}
        low, high, size = rows(cur, st.table_stats)[0]
        assert isinstance(low, datetime) and high - low > timedelta(seconds=50) and size > 100_000
        assert isinstance(rows(cur, st.server_time)[0][0], datetime)
        assert rows(cur, st.database_name) == [(srv.database,)]
        assert (table.schema, table.name, 3) in rows(cur, st.table_shapes)
        srv.clock.advance(3600)
        assert rows(cur, st.count_expired) == [(2,)]
        assert run(cur, st.delete_prefix, {"pattern": "ne%", "batch": 300}) == 1
        assert run(cur, st.destroy_expired, {"batch": 70_000}) == 1
        run(cur, st.set, {"sid": "x", "data": "y", "ttl": 60})
        assert run(cur, st.destroy, {"sid": "x"}) == 1
        assert run(cur, st.clear, {"batch": 5}) == 0
    finally:
        conn.close()
    assert any(line.startswith("RPC sp_prepexec") for line in srv.sql_log)


# -- the driver's other provider, in a child process (the provider is chosen once per process) ----------

_CHILD = textwrap.dedent("""
    import json, os, struct, sys
    import mssql_python
    port, database, user = sys.argv[1:4]
    password, token = os.environ["STANDIN_PASSWORD"], os.environ["STANDIN_TOKEN"]
    mssql_python.pooling(enabled=False)
    base = f"Server=127.0.0.1,{port};Database={database};Encrypt=yes;TrustServerCertificate=yes"
    out = {}
    conn = mssql_python.connect(f"{base};UID={user};PWD={password}", autocommit=True)
    cur = conn.cursor()
    cur.execute("SELECT %(a)s + %(b)s, DATEADD(second, %(a)s, '2024-01-01')", {"a": 60, "b": 70000})
    out["sum"], stamp = cur.fetchall()[0]
    out["stamp"] = stamp.isoformat()
    conn.close()
    raw = token.encode("utf-16-le")
    conn = mssql_python.connect(base, autocommit=True,
                                attrs_before={1256: struct.pack("<I", len(raw)) + raw})
    cur = conn.cursor()
    cur.execute("SELECT SUSER_SNAME()")
    out["principal"] = cur.fetchall()[0][0]
    conn.close()
    print(json.dumps(out))
""")


def test_other_provider_in_a_child_process(srv):
    reason = _provider_cannot_load(OTHER_PROVIDER)
    if reason:
        pytest.skip(reason)
    token = srv.issue_token("child@contoso.onmicrosoft.com")
    env = {**os.environ, "MSSQL_PYTHON_NATIVE_PROVIDER": OTHER_PROVIDER, "STANDIN_PASSWORD": srv.password,
           "STANDIN_TOKEN": token}  # not on the command line, where any process could read them
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(srv.port), srv.database, srv.user],
        capture_output=True, text=True, timeout=120, env=env, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "sum": 70060, "stamp": "2024-01-01T00:01:00", "principal": "child@contoso.onmicrosoft.com"}
    assert last_connection(srv)["encryption"] == "on"


# -- a Beaker session flow through MSSQLStore, with mssql-python behind a small adapter -------------------


class _AdapterCursor:
    """What the store needs of a cursor, on mssql-python: ``execute(sql, None)`` means no parameters
    (mssql-python would send None as one), every later result is read (a later statement's error
    surfaces only there), and ``rowcount`` is the first statement's, as pymssql reports it."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.rowcount = -1

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> None:
        if params is None:
            self._inner.execute(sql)
        else:
            self._inner.execute(sql, params)
        self.rowcount = self._inner.rowcount
        if self._inner.description is None:
            self._drain()

    def fetchall(self) -> list[tuple[Any, ...]]:
        found = [tuple(r) for r in self._inner.fetchall()]
        self._drain()
        return found

    def _drain(self) -> None:
        while self._inner.nextset():
            if self._inner.description is not None:
                self._inner.fetchall()

    def close(self) -> None:
        self._inner.close()


class _AdapterConnection:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def cursor(self) -> _AdapterCursor:
        return _AdapterCursor(self._inner.cursor())

    def close(self) -> None:
        self._inner.close()


@pytest.fixture
def store_on_mssql_python(srv, monkeypatch):
    """MSSQLStore's connections opened by mssql-python instead of pymssql (drivers.open_connection)."""
    from beaker_mssql import drivers

    opened: list[str] = []

    def open_connection(settings: Any) -> tuple[Any, float]:
        text = ";".join([f"Server={settings.server},{settings.port}", f"Database={settings.database}",
                         f"UID={settings.user}", f"PWD={{{settings.password}}}", "Encrypt=yes",
                         "TrustServerCertificate=yes", "ConnectRetryCount=0"])
        opened.append(settings.server)
        return _AdapterConnection(mssql_python.connect(text, autocommit=True)), float("inf")

    monkeypatch.setattr(drivers, "open_connection", open_connection)
    for name, extra in (("ERRORS", mssql_python.Error), ("INTEGRITY_ERRORS", mssql_python.IntegrityError),
                        ("INTERFACE_ERRORS", mssql_python.InterfaceError),
                        ("DATABASE_ERRORS", mssql_python.DatabaseError)):
        monkeypatch.setattr(drivers, name, (*getattr(drivers, name), extra))
    return opened


def test_beaker_sessions_through_the_store(srv, table, store_on_mssql_python):
    import webtest
    from beaker.middleware import SessionMiddleware

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        session = environ["beaker.session"]
        if environ["PATH_INFO"] == "/set":
            session["value"] = environ["QUERY_STRING"]
            session.save()
        elif environ["PATH_INFO"] == "/delete":
            session.delete()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"id": session.id, "value": session.get("value")}).encode()]

    web = webtest.TestApp(SessionMiddleware(app, {
        "session.type": "ext:mssql", "session.url": srv.url, "session.table": table.quoted,
        "session.data_serializer": "json"}))
    first = web.get("/set", "a").json  # a new session: save_insert
    assert web.get("/set", "b").json["id"] == first["id"]  # loaded (get), then save_update
    assert web.get("/").json == {"id": first["id"], "value": "b"}
    stored = srv.execute(f"SELECT [sid], [session] FROM {table.quoted}")
    assert [sid for sid, _ in stored] == [first["id"]] and '"b"' in stored[0][1]
    web.get("/delete")
    assert srv.execute(f"SELECT COUNT(*) FROM {table.quoted}") == [(0,)]
    assert store_on_mssql_python  # the store's connections were mssql-python's
    assert {c["app_name"] for c in srv.stats()["per_connection"].values()} == {"MSSQL-Python"}
