"""Issue 16, items 2 and 3: where this backend must refuse a session id, the client still gets what
Beaker's reference backends give it -- a session of its own -- and nothing reaches another user's row.

2. A cookie id the backend refuses (``"abc "``, 256 characters) under Pyramid, whose pyramid_beaker
   leaves ``invalidate_corrupt`` off: an empty new session and a new cookie, the refusal on the
   security logger, and no statement carrying that id ever sent.
3. A case variant of another user's id (unsigned cookies): a new id for that client, logged, and the
   other row untouched.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any

import pytest
import webtest
from beaker.middleware import SessionMiddleware
from beaker.session import Session
from pyramid.config import Configurator
from pyramid_beaker import session_factory_from_settings

from beaker_mssql import InvalidSessionId, SidCaseConflictError
from beaker_mssql.namespace import MSSQLNamespaceManager, close_all

pytestmark = pytest.mark.usefixtures("no_attentions")  # every result set is read to its end
COOKIE = "sid"
REFUSED_IDS = {"trailing-space": "abc ", "256-characters": "a" * 256}
NEW_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(autouse=True)
def fresh_registry():
    yield
    close_all()


def pyramid_app(session_settings: dict[str, Any]) -> webtest.TestApp:
    """A Pyramid app whose session comes from pyramid_beaker, configured the way an ini file does it."""
    settings = {"session.key": COOKIE, **{f"session.{k}": v for k, v in session_settings.items()}}
    config = Configurator(settings=settings)
    config.set_session_factory(session_factory_from_settings(settings))

    def view(request):
        session = request.session
        if "user" in request.params:
            session["user"] = request.params["user"]
        return {"id": session.id, "user": session.get("user"), "new": session.new}

    config.add_route("home", "/")
    config.add_view(view, route_name="home", renderer="json")
    return webtest.TestApp(config.make_wsgi_app())


def send_cookie(app: webtest.TestApp, value: str, query: str = "") -> webtest.TestResponse:
    app.reset()
    return app.get("/" + query, headers={"Cookie": f'{COOKIE}="{value}"'})


def cookie_sent(response: webtest.TestResponse) -> str:
    """The session id in the response's Set-Cookie header ('' when there is none)."""
    for name, value in response.headerlist:
        value = value.strip()
        if name.lower() == "set-cookie" and value.startswith(COOKIE + "="):
            return value.split(";", 1)[0].split("=", 1)[1].strip('"')
    return ""


def mssql_settings(standin: Any, table: str) -> dict[str, Any]:
    return {"type": "ext:mssql", "url": standin.url, "table": table}


def test_pyramid_beaker_leaves_invalidate_corrupt_off():
    """The premise of item 2: with pyramid_beaker a load error is not turned into a new session by Beaker."""
    factory = session_factory_from_settings({"session.type": "memory"})
    assert "invalidate_corrupt" not in factory._options
    session = factory(type("Request", (), {"environ": {}, "add_response_callback": lambda *a: None})())
    assert session._session().invalidate_corrupt is False


@pytest.mark.parametrize("refused", list(REFUSED_IDS.values()), ids=list(REFUSED_IDS))
def test_memory_backend_answers_a_refused_id_with_a_fresh_session(refused):
    """The reference: Beaker's memory backend has no notion of a refused id."""
    app = pyramid_app({"type": "memory"})
    body = send_cookie(app, refused).json
    assert body["user"] is None and body["new"] is True


@pytest.mark.parametrize("refused", list(REFUSED_IDS.values()), ids=list(REFUSED_IDS))
def test_refused_cookie_id_gets_a_new_empty_session_and_cookie(standin, mssql_table, caplog, refused):
    app = pyramid_app(mssql_settings(standin, mssql_table))
    alice = app.get("/?user=alice").json  # someone else's live session must stay out of reach
    standin.log_sql = True
    try:
        with caplog.at_level(logging.WARNING, logger="beaker_mssql.security"):
            first = send_cookie(app, refused)
            second = send_cookie(app, refused, "?user=bob")
    finally:
        standin.log_sql = False
    for response, user in ((first, None), (second, "bob")):
        assert response.status_int == 200
        assert response.json["user"] == user and response.json["new"] is True  # nothing loaded
        new_id = cookie_sent(response)
        assert NEW_ID.fullmatch(new_id), response.headerlist  # a fresh Beaker id replaces the cookie
        assert response.json["id"] == new_id
    assert cookie_sent(first) != cookie_sent(second)  # each request with the refused id: a new session
    # Nothing carrying the refused id reached the server.
    literal = refused.replace("'", "''")
    assert not [sql for sql in standin.sql_log if f"N'{literal}'" in sql]
    assert [sql for sql in standin.sql_log if cookie_sent(second) in sql]  # the new id did
    # The refusal and the replacement are on the security logger, without the whole id.
    security = [r.getMessage() for r in caplog.records if r.name == "beaker_mssql.security"]
    assert any("refused session id" in m for m in security), security
    assert any("new session" in m and "refused" in m for m in security), security
    assert not any(refused in m for m in security if len(refused) > 8)
    # The session saved under the new id is the client's from now on; alice's is untouched.
    app.reset()
    app.set_cookie(COOKIE, cookie_sent(second))
    assert app.get("/").json == {"id": cookie_sent(second), "user": "bob", "new": False}
    app.reset()
    app.set_cookie(COOKIE, alice["id"])
    assert app.get("/").json["user"] == "alice"


def test_refused_id_with_invalidate_corrupt_on_needs_no_invalidation(mssql_url, mssql_table, recwarn):
    """SessionMiddleware's default (invalidate_corrupt on): the same, without a 'corrupt' warning."""
    app = webtest.TestApp(
        SessionMiddleware(_session_app, type="ext:mssql", url=mssql_url, table=mssql_table, key=COOKIE)
    )
    body = send_cookie(app, "abc ", "?set=x").json
    assert body["value"] == "x" and NEW_ID.fullmatch(body["id"])
    assert not [w for w in recwarn.list if "corrupt" in str(w.message)]


def test_get_by_id_of_a_refused_id_finds_nothing(mssql_url, mssql_table):
    """SessionObject.get_by_id(id) answers None for an unknown id; a refused one is unknown too."""
    session = Session({}, id="abc ", use_cookies=False, type="ext:mssql", url=mssql_url, table=mssql_table)
    assert session.is_new and session.id != "abc "


def test_refused_id_outside_beaker_session_is_still_an_error(mssql_url, mssql_table):
    manager = MSSQLNamespaceManager("abc ", url=mssql_url, table=mssql_table, digest_filenames=False)
    with pytest.raises(InvalidSessionId):
        manager["session"]


# -- item 3: a case variant of another user's id --------------------------------------------------------
def _session_app(environ, start_response):
    session = environ["beaker.session"]
    query = environ.get("QUERY_STRING", "")
    if query.startswith("set="):
        session["value"] = query[4:]
        session.save()
    body = json.dumps({"id": session.id, "value": session.get("value"), "new": session.is_new})
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body.encode()]


def middleware_app(url: str, table: str) -> webtest.TestApp:
    """Unsigned cookies (no secret): the client picks the id it sends."""
    middleware = SessionMiddleware(_session_app, type="ext:mssql", url=url, table=table, key=COOKIE)
    return webtest.TestApp(middleware)


def raw_rows(server: Any, table: str) -> dict[str, str]:
    return {str(sid): str(data) for sid, data in server.execute(f"SELECT [sid], [session] FROM {table}")}


def test_memory_backend_keeps_case_variants_apart():
    """The reference: two ids differing by case are two sessions."""
    app = webtest.TestApp(SessionMiddleware(_session_app, type="memory", key=COOKIE))
    victim = app.get("/?set=victim").json["id"]
    attacker = send_cookie(app, victim.upper(), "?set=mallory").json
    assert attacker["value"] == "mallory"
    assert send_cookie(app, victim).json["value"] == "victim"


def test_case_variant_of_another_users_id_gets_a_session_of_its_own(mssql_server, mssql_table, caplog):
    app = middleware_app(mssql_server.url, mssql_table)
    victim = app.get("/?set=victim").json["id"]
    victim_row = raw_rows(mssql_server, mssql_table)[victim]
    variant = victim.upper()
    assert variant != victim
    with caplog.at_level(logging.WARNING, logger="beaker_mssql.security"):
        response = send_cookie(app, variant, "?set=mallory")
    assert response.status_int == 200
    assert response.json["value"] == "mallory"
    new_id = cookie_sent(response)
    assert NEW_ID.fullmatch(new_id) and new_id not in (victim, variant)
    # (SessionMiddleware saves after the app returned: the body still shows the id it was called with.)
    rows = raw_rows(mssql_server, mssql_table)
    assert rows[victim] == victim_row  # the other row is never touched
    assert new_id in rows and variant not in rows
    security = [r.getMessage() for r in caplog.records if r.name == "beaker_mssql.security"]
    assert any("letter case" in m and "new id" in m for m in security), security
    assert not any(victim in m for m in security)
    # The client continues with its own session; the victim keeps theirs.
    app.reset()
    app.set_cookie(COOKIE, new_id)
    assert app.get("/").json == {"id": new_id, "value": "mallory", "new": False}
    # Reading with the variant (no save) neither loads nor changes the victim's session.
    assert send_cookie(app, variant).json["value"] is None
    assert raw_rows(mssql_server, mssql_table)[victim] == victim_row
    assert send_cookie(app, victim).json["value"] == "victim"


def test_case_conflict_outside_beaker_session_is_still_an_error(mssql_server, mssql_table):
    victim = uuid.uuid4().hex
    middleware_app(mssql_server.url, mssql_table)  # nothing shared; just the same table
    manager = MSSQLNamespaceManager(victim, url=mssql_server.url, table=mssql_table, digest_filenames=False)
    manager["session"] = "dmljdGlt"
    variant = MSSQLNamespaceManager(
        victim.upper(), url=mssql_server.url, table=mssql_table, digest_filenames=False
    )
    with pytest.raises(SidCaseConflictError):
        variant["session"] = "bWFsbG9yeQ=="
    assert raw_rows(mssql_server, mssql_table)[victim] == "dmljdGlt"
