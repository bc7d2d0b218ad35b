"""examples/wsgi_app.py: the minimal SessionMiddleware example the README points at."""

from __future__ import annotations

import sys
from pathlib import Path

from webtest import TestApp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

import wsgi_app  # noqa: E402


def test_counter_survives_a_restart_and_lives_in_the_table(mssql_url, mssql_server, mssql_table):
    app = TestApp(wsgi_app.make_app(mssql_url, mssql_table))
    assert app.get("/").text == "visits: 1\n"
    assert app.get("/").text == "visits: 2\n"
    assert mssql_server.execute(f"SELECT COUNT(*) FROM {mssql_table}") == [(1,)]
    restarted = TestApp(wsgi_app.make_app(mssql_url, mssql_table), cookiejar=app.cookiejar)
    assert restarted.get("/").text == "visits: 3\n"
    assert TestApp(wsgi_app.make_app(mssql_url, mssql_table)).get("/").text == "visits: 1\n"


def test_url_from_the_environment(mssql_url, mssql_table, monkeypatch):
    monkeypatch.setenv("BEAKER_MSSQL_URL", mssql_url)
    app = TestApp(wsgi_app.make_app(table=mssql_table))
    assert app.get("/").text == "visits: 1\n"


def test_session_expires_with_the_database_clock(standin, mssql_table):
    app = TestApp(wsgi_app.make_app(standin.url, mssql_table, ttl=120))
    assert app.get("/").text == "visits: 1\n"
    standin.clock.advance(100)
    assert app.get("/").text == "visits: 2\n"  # saved again: 120 s from now
    standin.clock.advance(121)
    assert app.get("/").text == "visits: 1\n"
