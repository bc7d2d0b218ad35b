"""examples/bottle_app.py through SessionMiddleware, driven like a browser against the stand-in."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from beaker.session import SignedCookie
from helpers import signed_cookie_sid
from webtest import TestApp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

import bottle_app  # noqa: E402

COOKIE = "bottle_example"
SECRET = "change-me-to-a-long-random-string"


def stored(server, table: str, sid: str):
    rows = server.execute(f"SELECT [session] FROM {table} WHERE [sid] = N'{sid}' COLLATE Latin1_General_BIN2")
    return json.loads(rows[0][0]) if rows else None


def test_counter_login_and_restart(mssql_url, mssql_server, mssql_table, monkeypatch):
    monkeypatch.delenv("SESSION_SECRET", raising=False)
    app = TestApp(bottle_app.make_app(mssql_url, mssql_table))
    assert app.get("/").json == {"visits": 1, "user": None}
    assert app.get("/").json == {"visits": 2, "user": None}
    anonymous = signed_cookie_sid(app, COOKIE)

    assert app.post("/login", {"username": "carol"}).json == {"user": "carol"}
    assert signed_cookie_sid(app, COOKIE) != anonymous  # a new id on login ...
    assert stored(mssql_server, mssql_table, anonymous) is None  # ... and the old row is gone
    assert stored(mssql_server, mssql_table, signed_cookie_sid(app, COOKIE))["user"] == "carol"

    restarted = TestApp(bottle_app.make_app(mssql_url, mssql_table), cookiejar=app.cookiejar)
    assert restarted.get("/").json == {"visits": 3, "user": "carol"}


def test_login_needs_a_name(mssql_url, mssql_table):
    app = TestApp(bottle_app.make_app(mssql_url, mssql_table))
    assert app.post("/login", {"username": " "}, expect_errors=True).status_int == 400


def test_logout_removes_the_row(mssql_url, mssql_server, mssql_table):
    app = TestApp(bottle_app.make_app(mssql_url, mssql_table))
    app.post("/login", {"username": "dave"})
    sid = signed_cookie_sid(app, COOKIE)
    assert stored(mssql_server, mssql_table, sid) is not None
    app.post("/logout")
    assert stored(mssql_server, mssql_table, sid) is None
    assert signed_cookie_sid(app, COOKIE) != sid
    assert mssql_server.execute(f"SELECT COUNT(*) FROM {mssql_table}") == [(0,)]  # nothing saved yet
    assert app.get("/").json == {"visits": 1, "user": None}


def test_forged_cookies_get_fresh_sessions(mssql_url, mssql_server, mssql_table, monkeypatch):
    monkeypatch.delenv("SESSION_SECRET", raising=False)
    victim = TestApp(bottle_app.make_app(mssql_url, mssql_table))
    victim.post("/login", {"username": "erin"})
    value = victim.cookies[COOKIE].strip('"')

    tampered = TestApp(bottle_app.make_app(mssql_url, mssql_table))
    tampered.set_cookie(COOKIE, value[:40] + value[40:-1] + ("a" if value[-1] != "a" else "b"))
    assert tampered.get("/").json == {"visits": 1, "user": None}

    unsigned = TestApp(bottle_app.make_app(mssql_url, mssql_table))
    unsigned.set_cookie(COOKIE, value[40:])  # the bare id without its signature
    assert unsigned.get("/").json == {"visits": 1, "user": None}

    unknown = TestApp(bottle_app.make_app(mssql_url, mssql_table))
    unknown.set_cookie(COOKIE, SignedCookie(SECRET).value_encode("f" * 32)[1])
    assert unknown.get("/").json == {"visits": 1, "user": None}

    assert stored(mssql_server, mssql_table, signed_cookie_sid(victim, COOKIE))["user"] == "erin"
