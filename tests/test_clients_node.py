"""Node <-> Python on one table: the real connect-mssql-v2 (pinned in tests/node/package-lock.json,
over mssql 11 / tedious 18: RPC sp_executesql, TM requests, TLS) and a Beaker app with
``data_serializer = json``, both on the stand-in (or the real server of BEAKER_MSSQL_TEST_URL).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from beaker.middleware import SessionMiddleware
from helpers import WSGIClient
from node_clients import NodeError, NodeStore

from beaker_mssql.errors import sqlserver_equivalent
from beaker_mssql.namespace import close_all

TTL = 600  # the Beaker side's row lifetime, seconds


@pytest.fixture(autouse=True)
def fresh_registry():
    yield
    close_all()


def _app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    session = environ["beaker.session"]
    path = environ["PATH_INFO"]
    query = environ.get("QUERY_STRING", "")
    if path == "/incr":
        session["n"] = session.get("n", 0) + 1
        session.save()
    elif path == "/login":
        session["user"] = query
        # express-session needs a cookie object in every session it loads (README: sharing rows)
        expires = (datetime.now(timezone.utc) + timedelta(seconds=TTL)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        session["cookie"] = {"originalMaxAge": TTL * 1000, "expires": expires, "httpOnly": True, "path": "/"}
        session.save()
    body = json.dumps({"id": session.id, "n": session.get("n"), "user": session.get("user"),
                       "new": session.is_new})
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body.encode()]


def beaker_client(url: str, table: str, sid: str = "") -> WSGIClient:
    """A browser on the Beaker app (unsigned cookies, so it can present a session id Node made)."""
    config = {"session.type": "ext:mssql", "session.url": url, "session.table": table,
              "session.data_serializer": "json", "session.ttl": TTL}
    return WSGIClient(SessionMiddleware(_app, config), cookie=f"beaker.session.id={sid}" if sid else None)


def beaker_get(client: WSGIClient, path: str = "/") -> dict[str, Any]:
    return dict(json.loads(client.get(path)))


def node_session(expires: datetime, **data: Any) -> dict[str, Any]:
    """A session as express-session hands it to the store."""
    stamp = expires.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return {"cookie": {"originalMaxAge": 3600000, "expires": stamp, "httpOnly": True, "path": "/"}, **data}


NODE_SID = "kV3dP0tq8zG2rJmN5yXw1LcA9bHe4sUf"  # what express-session's uid-safe ids look like


@pytest.fixture
def node(mssql_server: Any, mssql_table: str):
    store = NodeStore(mssql_server, mssql_table)
    yield store
    store.close()


def test_node_writes_beaker_changes_node_reads_back(node, mssql_url, mssql_table):
    node.call("set", sid=NODE_SID, session=node_session(datetime.now(timezone.utc) + timedelta(hours=1),
                                                        user="alice", n=41))
    browser = beaker_client(mssql_url, mssql_table, NODE_SID)
    loaded = beaker_get(browser)
    assert loaded == {"id": NODE_SID, "n": 41, "user": "alice", "new": False}
    assert beaker_get(browser, "/incr")["n"] == 42
    back = node.call("get", sid=NODE_SID)
    assert back["n"] == 42 and back["user"] == "alice"
    assert back["cookie"]["path"] == "/"  # Node's own keys survive Beaker's save


def test_beaker_writes_node_reads(node, mssql_url, mssql_table):
    browser = beaker_client(mssql_url, mssql_table)
    sid = beaker_get(browser, "/login?bob")["id"]
    seen = node.call("get", sid=sid)
    assert seen["user"] == "bob"
    assert seen["cookie"]["originalMaxAge"] == TTL * 1000
    assert node.call("get", sid="no-such-session") is None


def test_node_destroy_is_seen_by_beaker(node, mssql_url, mssql_table):
    node.call("set", sid=NODE_SID, session=node_session(datetime.now(timezone.utc) + timedelta(hours=1),
                                                        user="carol"))
    assert beaker_get(beaker_client(mssql_url, mssql_table, NODE_SID))["user"] == "carol"
    node.call("destroy", sid=NODE_SID)
    after = beaker_get(beaker_client(mssql_url, mssql_table, NODE_SID))
    assert after["user"] is None and after["new"] is True


def test_node_length_touch_clear_on_beaker_rows(node, mssql_server, mssql_url, mssql_table):
    sids = [beaker_get(beaker_client(mssql_url, mssql_table), f"/login?u{i}")["id"] for i in range(3)]
    assert node.call("length") == 3
    assert set(node.call("all")) == set(sids)
    later = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=3)
    node.call("touch", sid=sids[0], session=node_session(later))
    expires = mssql_server.execute(f"SELECT [expires] FROM {mssql_table} WHERE [sid] = N'{sids[0]}'")[0][0]
    assert expires == later.replace(tzinfo=None)  # touch wrote the cookie's expiry (UTC) into Beaker's row
    assert beaker_get(beaker_client(mssql_url, mssql_table, sids[0]))["user"] == "u0"  # still loads
    node.call("clear")
    assert node.call("length") == 0
    assert beaker_get(beaker_client(mssql_url, mssql_table, sids[1]))["user"] is None


def test_expiry_by_the_standin_clock_is_seen_by_both(standin, mssql_table):
    node = NodeStore(standin, mssql_table)
    try:
        now = standin.clock.utcnow()
        node.call("set", sid=NODE_SID, session=node_session(now + timedelta(seconds=TTL // 2), user="node"))
        beaker_sid = beaker_get(beaker_client(standin.url, mssql_table), "/login?py")["id"]
        keeper = beaker_get(beaker_client(standin.url, mssql_table), "/login?keeper")["id"]
        standin.execute(f"UPDATE {mssql_table} SET [expires] = DATEADD(day, 1, GETUTCDATE()) "
                        f"WHERE [sid] = N'{keeper}'")
        assert beaker_get(beaker_client(standin.url, mssql_table, NODE_SID))["user"] == "node"
        node.call("destroyExpired")
        assert node.call("length") == 3  # nothing has expired yet by the stand-in's clock

        standin.clock.advance(TTL + 1)  # both rows are now past their expiry on the server
        assert beaker_get(beaker_client(standin.url, mssql_table, NODE_SID))["new"] is True
        assert beaker_get(beaker_client(standin.url, mssql_table, beaker_sid))["new"] is True
        # connect-mssql-v2's get() does not look at expires (README: "reads that return expired rows
        # until the next sweep"); its sweep compares with GETUTCDATE(), the stand-in's clock.
        assert node.call("get", sid=NODE_SID)["user"] == "node"
        node.call("destroyExpired")
        assert node.call("get", sid=NODE_SID) is None
        assert node.call("all") == {keeper: node.call("get", sid=keeper)}
        assert node.call("errors") == []
    finally:
        node.close()


def test_node_over_tls(mssql_server, mssql_table, request):
    """encrypt: true with trustServerCertificate: the whole TDS stream inside TLS."""
    server = mssql_server
    if getattr(server, "is_standin", False):
        from beaker_mssql.testing import SQLServerStandIn

        server = SQLServerStandIn(tls=True).start()
        request.addfinalizer(server.close)
        server.execute("CREATE TABLE sessions (sid nvarchar(255) NOT NULL PRIMARY KEY, "
                       "session nvarchar(max) NOT NULL, expires datetime NOT NULL)")
        mssql_table = "sessions"
    node = NodeStore(server, mssql_table, encrypt=True)
    try:
        node.call("set", sid=NODE_SID, session=node_session(datetime.now(timezone.utc) + timedelta(hours=1),
                                                            user="tls"))
        assert node.call("get", sid=NODE_SID)["user"] == "tls"
        if server is not mssql_server:
            per = server.stats()["per_connection"].values()
            assert {c["encryption"] for c in per} == {"on"}
            assert all(0x0A in c["features"] for c in per)  # tedious asks for UTF-8 support (TDS 7.4)
    finally:
        node.close()


def test_node_transactions_prepared_statements_and_output_parameters(node, mssql_server, mssql_table):
    """What mssql/tedious send besides sp_executesql: TM requests (Transaction), sp_prepare/sp_execute/
    sp_unprepare (PreparedStatement), output parameters (RETURNVALUE)."""
    expires = datetime.now(timezone.utc) + timedelta(hours=1)
    node.call("set", sid=NODE_SID, session=node_session(expires, user="dave"))
    update = f"UPDATE {mssql_table} SET [session] = N'{{}}' WHERE [sid] = @sid"
    assert node.call("transaction", sid=NODE_SID, sql=update, commit=False) == 1  # @@TRANCOUNT inside
    assert node.call("get", sid=NODE_SID)["user"] == "dave"  # rolled back
    assert node.call("transaction", sid=NODE_SID, sql=update, commit=True) == 1
    assert node.call("get", sid=NODE_SID) == {}
    rows = node.call("prepared", sql=f"SELECT [sid] FROM {mssql_table} WHERE [sid] = @sid",
                     sids=[NODE_SID, "missing"])
    assert rows == [[{"sid": NODE_SID}], []]
    result = node.call("query", sql="SET @doubled = @n * 2",
                       params={"n": {"type": "Int", "value": 21}, "doubled": {"type": "Int", "output": True}})
    assert result["output"] == {"doubled": 42}
    with pytest.raises(NodeError) as info:
        node.call("query", sql="SELECT * FROM no_such_table WHERE a = @a",
                  params={"a": {"type": "Int", "value": 1}})
    assert sqlserver_equivalent(info.value.number, str(info.value)) == 208  # Babelfish: 33557097


def test_node_parameter_types(node):
    """The parameter types mssql/tedious send (TYPE_INFO decoding in typeinfo.py), back as values."""
    params = {
        "i": {"type": "Int", "value": -7},
        "b": {"type": "BigInt", "value": 2**40},
        "bit": {"type": "Bit", "value": True},
        "f": {"type": "Float", "value": 0.25},
        "s": {"type": "NVarChar", "value": "ünïcødé ✓"},
        "smax": {"type": "NVarCharMax", "value": "x" * 70000},
        "v": {"type": "VarChar", "value": "latin é"},
        "bin": {"type": "VarBinaryMax", "value": "00ff10", "hex": True},
        "dt": {"type": "DateTime", "value": "2024-02-29T13:45:06.123Z", "date": True},
        "dt2": {"type": "DateTime2", "value": "2024-02-29T13:45:06.123Z", "date": True},
        "nul": {"type": "NVarChar", "value": None},
    }
    result = node.call("query", params=params, sql=(
        "SELECT @i AS i, @b AS b, @bit AS bit, @f AS f, @s AS s, LEN(@smax) AS smax, @v AS v, @bin AS bin, "
        "@dt AS dt, DATEPART(millisecond, @dt2) AS ms2, @nul AS nul"))
    (row,) = result["recordset"]
    # mssql hands bigint over as a string; LEN() of an nvarchar(max) is bigint, as in SQL Server
    assert row == {"i": -7, "b": str(2**40), "bit": True, "f": 0.25, "s": "ünïcødé ✓", "smax": "70000",
                   "v": "latin é", "bin": {"hex": "00ff10"}, "dt": "2024-02-29T13:45:06.123Z", "ms2": 123,
                   "nul": None}
    # datetimeoffset: decoded, but the engine has no such type to declare (a clear refusal, README)
    with pytest.raises(NodeError, match="does not support the data type datetimeoffset"):
        node.call("query", sql="SELECT @d AS d",
                  params={"d": {"type": "DateTimeOffset", "value": "2024-02-29T13:45:06Z", "date": True}})


def test_tedious_reset_connection(node, mssql_server):
    """tedious's Connection.reset() (what connection pools call between users) sets RESETCONNECTION:
    the transaction is rolled back, options and database are the login's again, and tedious gets its
    'resetConnection' acknowledgement."""
    result = node.call("tediousReset", before="SET XACT_ABORT ON; USE master; BEGIN TRANSACTION",
                       probe="SELECT @@TRANCOUNT, @@OPTIONS & 16384, DB_NAME()")
    assert result["before"] == [[1, 16384, "master"]]
    assert result["after"] == [[0, 0, mssql_server.database]]
    assert result["resets"] == 1
