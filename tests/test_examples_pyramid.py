"""examples/pyramid_app driven like a browser (WebTest keeps the cookies) against the stand-in:
the session lives in SQL Server, survives an app restart, expires by the database clock, logs in
with a new id, logs out by deleting the row, and a forged cookie never reaches another session.
Also the Pyramid include (beaker_mssql.integrations.pyramid)."""

from __future__ import annotations

import json
import logging
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from beaker.session import SignedCookie
from helpers import signed_cookie_sid
from webtest import TestApp

from beaker_mssql.config import ConfigurationError
from beaker_mssql.integrations import pyramid as integration

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

import pyramid_app  # noqa: E402

COOKIE = "beaker_mssql_example"


@pytest.fixture
def cache_table(mssql_server):
    quoted = f"[dbo].[cache_{uuid.uuid4().hex[:10]}]"
    yield quoted
    mssql_server.execute(f"IF OBJECT_ID(N'{quoted}', N'U') IS NOT NULL DROP TABLE {quoted};")


@pytest.fixture
def settings(mssql_url, mssql_table, cache_table):
    """development.ini with the test server and fresh tables: what a deployment would override."""
    values = pyramid_app.load_settings()
    values.update(
        {
            "session.url": mssql_url,
            "cache.url": mssql_url,
            "session.table": mssql_table,
            "cache.short_term.table": cache_table,
        }
    )
    return values


def browser(settings, cookiejar=None, **overrides) -> TestApp:
    app = pyramid_app.main({}, **dict(settings, **overrides))
    return TestApp(app, cookiejar=cookiejar) if cookiejar is not None else TestApp(app)


def visits(page) -> int:
    return int(page.html.find(id="visits").text)


def row(server, table: str, sid: str):
    rows = server.execute(
        f"SELECT [session], [expires] FROM {table} WHERE [sid] = N'{sid}' COLLATE Latin1_General_BIN2"
    )
    return rows[0] if rows else None


def login(app: TestApp, name: str):
    form = app.get("/").forms["login"]
    form["username"] = name
    return form.submit().follow()


def test_visit_counter_lives_in_sql_server_and_survives_an_app_restart(settings, mssql_server, mssql_table):
    app = browser(settings)
    assert visits(app.get("/")) == 1
    assert visits(app.get("/")) == 2
    sid = signed_cookie_sid(app, COOKIE)
    stored = row(mssql_server, mssql_table, sid)
    assert stored is not None
    # data_serializer = json: the column is readable JSON (connect-mssql-v2 can share it)
    assert json.loads(stored[0])["visits"] == 2

    restarted = browser(settings, cookiejar=app.cookiejar)  # new app object, same database and cookies
    assert visits(restarted.get("/")) == 3
    assert signed_cookie_sid(restarted, COOKIE) == sid
    stranger = browser(settings)  # another browser: its own session
    assert visits(stranger.get("/")) == 1


def test_login_gets_a_new_session_id_and_flashes_once(settings, mssql_server, mssql_table):
    app = browser(settings)
    app.get("/")
    before = signed_cookie_sid(app, COOKIE)
    page = login(app, "alice")
    after = signed_cookie_sid(app, COOKIE)
    assert after != before  # session fixation: an id known before login is useless after it
    assert page.html.find(id="user").text == "alice"
    assert [li.text for li in page.html.find_all("li", class_="flash")] == ["Welcome, alice!"]
    assert app.get("/").html.find_all("li", class_="flash") == []  # popped: shown once
    assert app.get("/whoami").json["user"] == "alice"
    assert row(mssql_server, mssql_table, before) is None  # the pre-login row is gone


def test_login_requires_the_csrf_token(settings):
    app = browser(settings)
    app.get("/")
    response = app.post("/login", {"username": "mallory"}, expect_errors=True)
    assert response.status_int == 400
    assert app.get("/whoami").json["user"] is None


def test_logout_deletes_the_row_and_starts_a_new_id(settings, mssql_server, mssql_table):
    app = browser(settings)
    login(app, "bob")
    sid = signed_cookie_sid(app, COOKIE)
    assert row(mssql_server, mssql_table, sid) is not None
    page = app.get("/")
    response = page.forms["logout"].submit()
    assert response.status_int == 303
    assert row(mssql_server, mssql_table, sid) is None  # deleted, not just emptied
    assert signed_cookie_sid(app, COOKIE) != sid  # the browser continues with a new id
    assert app.get("/whoami").json == {"user": None, "visits": 0}
    page = response.follow()
    assert [li.text for li in page.html.find_all("li", class_="flash")] == ["You are logged out."]


def test_tampered_cookie_gets_a_fresh_session(settings, mssql_server, mssql_table):
    alice = browser(settings)
    login(alice, "alice")
    value = alice.cookies[COOKIE].strip('"')
    flipped = value[:-1] + ("0" if value[-1] != "0" else "1")
    mallory = browser(settings)
    mallory.set_cookie(COOKIE, flipped)
    assert mallory.get("/whoami").json == {"user": None, "visits": 0}
    assert visits(mallory.get("/")) == 1
    assert signed_cookie_sid(mallory, COOKIE) != signed_cookie_sid(alice, COOKIE)
    assert json.loads(row(mssql_server, mssql_table, signed_cookie_sid(alice, COOKIE))[0])["user"] == "alice"


def test_unknown_id_with_a_valid_signature_gets_a_fresh_session(settings):
    alice = browser(settings)
    login(alice, "alice")
    secret = settings["session.secret"]
    unknown = uuid.uuid4().hex
    mallory = browser(settings)
    mallory.set_cookie(COOKIE, SignedCookie(secret).value_encode(unknown)[1])
    assert mallory.get("/whoami").json == {"user": None, "visits": 0}


def test_case_variant_of_another_users_id_never_loads_or_overwrites_it(settings, mssql_server, mssql_table):
    """The table's collation is case-insensitive; the BIN2 predicate keeps 'ABC' from finding 'abc'."""
    alice = browser(settings)
    login(alice, "alice")
    sid = signed_cookie_sid(alice, COOKIE)
    assert sid != sid.upper()
    mallory = browser(settings)
    mallory.set_cookie(COOKIE, SignedCookie(settings["session.secret"]).value_encode(sid.upper())[1])
    assert mallory.get("/whoami").json == {"user": None, "visits": 0}  # not alice's session
    # Saving under the case variant would collide with alice's primary key: mallory gets an id of her own.
    assert visits(mallory.get("/")) == 1
    assert signed_cookie_sid(mallory, COOKIE) not in (sid, sid.upper())
    assert json.loads(row(mssql_server, mssql_table, sid)[0])["user"] == "alice"
    assert alice.get("/whoami").json["user"] == "alice"


@pytest.mark.parametrize("use_utc", [True, False])
def test_expiry_follows_the_database_clock(settings, standin, mssql_table, use_utc):
    # Local time 5 hours ahead of UTC: GETDATE() and GETUTCDATE() differ, so the test can tell
    # which clock wrote the row.
    standin.clock.utc_offset = timedelta(hours=5)
    app = browser(settings, **{"session.ttl": "600", "session.use_utc": str(use_utc).lower()})
    assert visits(app.get("/")) == 1
    sid = signed_cookie_sid(app, COOKIE)
    _, expires = row(standin, mssql_table, sid)
    ((local_now, utc_now),) = standin.execute("SELECT GETDATE(), GETUTCDATE()")
    now = utc_now if use_utc else local_now
    assert timedelta(seconds=590) < expires - now <= timedelta(seconds=600)

    standin.clock.advance(590)
    assert app.get("/whoami").json["visits"] == 1  # still alive (and its expiry moves on)
    standin.clock.advance(601)
    assert app.get("/whoami").json == {"user": None, "visits": 0}  # gone for the app ...
    assert visits(app.get("/")) == 1  # ... which starts over
    # The server's local time jumps 30 minutes (a daylight-saving change): rows written with
    # GETDATE() (use_utc = false) expire 30 minutes early; UTC rows do not notice.
    standin.clock.utc_offset = timedelta(hours=5, minutes=30)
    expected = {"user": None, "visits": 1} if use_utc else {"user": None, "visits": 0}
    assert app.get("/whoami").json == expected


def test_session_survives_a_database_restart(settings, standin):
    app = browser(settings)
    assert visits(app.get("/")) == 1
    standin.stop()
    standin.start()  # same port and data; the pool must replace its dead connections
    assert visits(app.get("/")) == 2


def test_cached_view_is_computed_once_and_stored_in_its_table(settings, mssql_server, cache_table):
    app = browser(settings)
    first = app.get("/report?day=monday").html.find(id="computation").text
    assert app.get("/report?day=monday").html.find(id="computation").text == first
    rows = mssql_server.execute(f"SELECT [sid] FROM {cache_table}")
    assert len(rows) == 1 and "monday" in rows[0][0]
    restarted = browser(settings)
    assert restarted.get("/report?day=monday").html.find(id="computation").text == first
    other = restarted.get("/report?day=tuesday").html.find(id="computation").text
    assert int(other) > int(first)


def test_include_creates_tables_when_asked(settings, mssql_server):
    fresh = f"[dbo].[created_{uuid.uuid4().hex[:8]}]"
    try:
        browser(settings, **{"session.table": fresh, "session.create_table": "true"})
        assert mssql_server.execute(f"SELECT OBJECT_ID(N'{fresh}', N'U')")[0][0] is not None
    finally:
        mssql_server.execute(f"IF OBJECT_ID(N'{fresh}', N'U') IS NOT NULL DROP TABLE {fresh};")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("session.ttl", "1h", "ttl"),
        ("session.url", "", "session.url is required"),
        ("session.table", "a.b.c", "table"),
        ("cache.short_term.pool_size", "many", "cache.short_term."),
    ],
)
def test_include_rejects_bad_settings_at_startup(settings, key, value, message):
    with pytest.raises(ConfigurationError) as exc:
        pyramid_app.main({}, **dict(settings, **{key: value}))
    assert message in str(exc.value)


def test_include_logs_the_server_without_the_password_and_warns_on_short_ttl(settings, mssql_server, caplog):
    caplog.set_level(logging.INFO, logger="beaker_mssql")
    pyramid_app.main({}, **dict(settings, **{"session.ttl": "60", "session.timeout": "3600"}))
    text = caplog.text
    assert "sessions in" in text and mssql_server.host in text
    assert mssql_server.password not in text
    assert "shorter than session.timeout" in text


def test_include_warns_about_unsigned_cookies(settings, caplog):
    caplog.set_level(logging.WARNING, logger="beaker_mssql")
    pyramid_app.main({}, **settings)
    assert "session.secret is not set" not in caplog.text
    unsigned = {k: v for k, v in settings.items() if k != "session.secret"}
    pyramid_app.main({}, **unsigned)
    assert "session.secret is not set" in caplog.text


def test_include_ignores_other_session_types():
    assert integration.validate_settings({"session.type": "memory"}) == (None, {})
    session, caches = integration.validate_settings(
        {"session.type": "ext:mssql", "session.url": "mssql://sa:pw@h/db", "session.ttl": "90"}
    )
    assert session is not None and session.ttl == 90 and caches == {}


def test_development_ini_loads_through_pastedeploy_like_pserve(tmp_path, mssql_url, mssql_table, cache_table):
    """`pserve development.ini` builds the app through PasteDeploy (`use = call:pyramid_app:main`)."""
    from pyramid.paster import get_app

    text = (Path(pyramid_app.DEFAULT_INI)).read_text(encoding="utf-8")
    dev_url = "mssql://sa:Dev-Only-Passw0rd@127.0.0.1:14330/test"
    assert text.count(dev_url) == 2
    text = text.replace(dev_url, mssql_url.replace("%", "%%"))
    text = text.replace("session.table = [dbo].[sessions]", f"session.table = {mssql_table}")
    text = text.replace("short_term.table = [dbo].[beaker_cache]", f"short_term.table = {cache_table}")
    ini = tmp_path / "development.ini"
    ini.write_text(text, encoding="utf-8")
    app = TestApp(get_app(str(ini), "main"))
    assert visits(app.get("/")) == 1
    assert visits(app.get("/")) == 2
