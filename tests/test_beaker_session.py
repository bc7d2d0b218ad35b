"""Beaker sessions end to end: SessionMiddleware + WebTest with ``session.type = ext:mssql``."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
import webtest
from beaker.middleware import SessionMiddleware
from helpers import run_threads

from beaker_mssql import CorruptSessionError, MSSQLStore
from beaker_mssql.namespace import close_all

pytestmark = pytest.mark.usefixtures("no_attentions")  # every result set is read to its end


@pytest.fixture(autouse=True)
def fresh_registry():
    yield
    close_all()


def app(environ, start_response):
    session = environ["beaker.session"]
    path = environ["PATH_INFO"]
    query = environ.get("QUERY_STRING", "")
    if path == "/set":
        session["value"] = query
        session.save()
    elif path == "/delete":
        session.delete()
    elif path == "/invalidate":
        session.invalidate()
        session["value"] = "after-invalidate"
        session.save()
    elif path == "/regenerate":
        session.regenerate_id()
        session.save()
    body = json.dumps({"id": session.id, "value": session.get("value"), "user": session.get("user"),
                       "new": session.is_new})
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body.encode()]


def make_app(url, table, **options):
    config = {"session.type": "ext:mssql", "session.url": url, "session.table": table}
    config.update({f"session.{k}": v for k, v in options.items()})
    return webtest.TestApp(SessionMiddleware(app, config))


def rows(server, table):
    return {r[0]: r[1] for r in server.execute(f"SELECT [sid], [session] FROM {table}")}


def test_new_reload_modify(mssql_server, mssql_url, mssql_table):
    web = make_app(mssql_url, mssql_table)
    first = web.get("/set", "a").json
    assert first["value"] == "a"
    sid = first["id"]
    assert sid in rows(mssql_server, mssql_table)  # row id is exactly the Beaker session id
    again = web.get("/").json
    assert again == {"id": sid, "value": "a", "user": None, "new": False}
    web.get("/set", "b")
    assert web.get("/").json["value"] == "b"
    # A second browser does not see it.
    assert make_app(mssql_url, mssql_table).get("/").json["value"] is None


@pytest.mark.parametrize("serializer", ["json", "pickle"])
def test_delete_removes_the_row(mssql_server, mssql_url, mssql_table, serializer):
    # Beaker's delete() clears the data, expires the cookie and then saves the emptied dict (its own
    # "delete when empty" check never fires since 1.12); the backend turns that save into a DELETE.
    web = make_app(mssql_url, mssql_table, data_serializer=serializer)
    sid = web.get("/set", "x").json["id"]
    other = make_app(mssql_url, mssql_table, data_serializer=serializer).get("/set", "y").json["id"]
    web.get("/delete")
    assert sid not in rows(mssql_server, mssql_table)
    assert other in rows(mssql_server, mssql_table)  # nobody else's row goes with it
    assert web.get("/").json["value"] is None


def test_encrypted_empty_session_is_saved_not_recognised(mssql_server, mssql_url, mssql_table):
    # An encrypted emptied session cannot be told apart from data: it is stored (and decrypts to {}).
    pytest.importorskip("cryptography")
    web = make_app(mssql_url, mssql_table, encrypt_key="k" * 32, validate_key="v" * 32)
    sid = web.get("/set", "x").json["id"]
    web.get("/delete")
    assert sid in rows(mssql_server, mssql_table)
    assert web.get("/").json["value"] is None


def test_invalidate(mssql_server, mssql_url, mssql_table):
    web = make_app(mssql_url, mssql_table)
    old = web.get("/set", "x").json["id"]
    new = web.get("/invalidate").json["id"]
    assert new != old
    assert web.get("/").json == {"id": new, "value": "after-invalidate", "user": None, "new": False}


def test_regenerate_id(mssql_server, mssql_url, mssql_table):
    web = make_app(mssql_url, mssql_table)
    old = web.get("/set", "keep").json["id"]
    new = web.get("/regenerate").json["id"]
    assert new != old
    reloaded = web.get("/").json
    assert reloaded["id"] == new and reloaded["value"] == "keep"


def test_timeout_expiry_by_server_clock(standin, mssql_table):
    web = make_app(standin.url, mssql_table, timeout=60)  # row ttl = 60 + 120 (Beaker's margin)
    sid = web.get("/set", "x").json["id"]
    standin.clock.advance(170)
    assert web.get("/").json["value"] == "x"  # Beaker's own check uses the app clock: still fine
    standin.clock.advance(185)
    reply = web.get("/").json
    assert reply["value"] is None and reply["new"] is True
    assert reply["id"] == sid


def test_ttl_precedence(standin, mssql_table):
    short = make_app(standin.url, mssql_table, timeout=600, ttl=30)
    short.get("/set", "s")
    long = make_app(standin.url, mssql_table, timeout=600)
    long.get("/set", "l")
    standin.clock.advance(31)
    assert short.get("/").json["value"] is None  # explicit ttl wins over Beaker's timeout
    assert long.get("/").json["value"] == "l"  # timeout + 120 s


def test_use_utc_false_with_offset(standin, mssql_table):
    standin.clock.utc_offset = timedelta(hours=5)  # GETDATE() is 5 h ahead of GETUTCDATE()
    local = make_app(standin.url, mssql_table, use_utc="false", ttl=60)
    sid = local.get("/set", "x").json["id"]
    # A reader on UTC would see the row as live for 5 more hours: both sides must agree.
    utc_store = MSSQLStore(url=standin.url, table=mssql_table, use_utc=True)
    try:
        standin.clock.advance(61)
        assert local.get("/").json["value"] is None  # expired by local time
        assert utc_store.get(sid) is not None
    finally:
        utc_store.close()


def test_json_serializer_row_is_plain_json(mssql_server, mssql_url, mssql_table):
    web = make_app(mssql_url, mssql_table, data_serializer="json")
    sid = web.get("/set", "hello").json["id"]
    text = rows(mssql_server, mssql_table)[sid]
    data = json.loads(text)
    assert data["value"] == "hello" and "_accessed_time" in data
    assert web.get("/").json["value"] == "hello"


def test_connect_mssql_v2_row_loads(mssql_server, mssql_url, mssql_table):
    sid = uuid.uuid4().hex
    row = ('{"cookie":{"originalMaxAge":86400000,"expires":"2026-12-31T00:00:00.000Z","httpOnly":true,'
           '"path":"/"},"user":"bob"}')
    mssql_server.execute(
        f"INSERT INTO {mssql_table} ([sid], [session], [expires]) "
        f"VALUES (N'{sid}', N'{row}', DATEADD(second, 3600, GETUTCDATE()))"
    )
    web = make_app(mssql_url, mssql_table, data_serializer="json")
    web.set_cookie("beaker.session.id", sid)
    reply = web.get("/").json
    assert reply["id"] == sid and reply["user"] == "bob" and reply["new"] is False


def test_pickle_roundtrip_unchanged(mssql_server, mssql_url, mssql_table):
    web = make_app(mssql_url, mssql_table)
    sid = web.get("/set", "p").json["id"]
    text = rows(mssql_server, mssql_table)[sid]
    assert not text.startswith("{")  # pickle blob kept as Beaker wrote it (base64)
    assert web.get("/").json["value"] == "p"


def test_encrypted_session_roundtrip(mssql_server, mssql_url, mssql_table):
    pytest.importorskip("cryptography", reason="Beaker's AES needs the cryptography package")
    web = make_app(mssql_url, mssql_table, encrypt_key="k" * 32, validate_key="v" * 32,
                   data_serializer="json")
    sid = web.get("/set", "secret-value").json["id"]
    text = rows(mssql_server, mssql_table)[sid]
    assert "secret-value" not in text and not text.startswith("{")
    assert web.get("/").json["value"] == "secret-value"


def test_corrupt_row_invalidated_or_reported(mssql_server, mssql_url, mssql_table):
    sid = uuid.uuid4().hex
    mssql_server.execute(
        f"INSERT INTO {mssql_table} ([sid], [session], [expires]) "
        f"VALUES (N'{sid}', N'{{broken', DATEADD(second, 3600, GETUTCDATE()))"
    )
    strict = make_app(mssql_url, mssql_table, invalidate_corrupt=False)
    strict.set_cookie("beaker.session.id", sid)
    with pytest.raises(CorruptSessionError):
        strict.get("/")
    lenient = make_app(mssql_url, mssql_table, invalidate_corrupt=True)
    lenient.set_cookie("beaker.session.id", sid)
    with pytest.warns(Warning, match="Invalidating corrupt session"):
        reply = lenient.get("/").json
    assert reply["id"] != sid and reply["value"] is None


def test_cookie_differing_by_case_does_not_load(mssql_server, mssql_url, mssql_table):
    web = make_app(mssql_url, mssql_table)
    sid = web.get("/set", "mine").json["id"]
    attacker = make_app(mssql_url, mssql_table)
    attacker.set_cookie("beaker.session.id", sid.upper())
    assert attacker.get("/").json["value"] is None


@pytest.mark.parametrize(("touch_interval", "read_only_exchanges"), [(None, 1), (0, 2)])
def test_hot_path_round_trips(standin, mssql_table, touch_interval, read_only_exchanges):
    """Exchanges (requests + attentions) per request: 2 to modify; 1 to read (2 with touch_interval=0)."""
    options = {} if touch_interval is None else {"touch_interval": touch_interval}
    web = make_app(standin.url, mssql_table, **options)
    web.get("/set", "x")
    web.get("/set", "y")  # warm-up: pool filled, statements cached
    standin.reset_stats()
    web.get("/set", "z")  # load + save of an existing session
    stats = standin.stats()
    assert stats["requests"] + stats["attentions"] == 2 and stats["logins"] == 0
    standin.reset_stats()
    web.get("/")  # read-only: the access time is saved only when the row is older than touch_interval
    stats = standin.stats()
    assert stats["requests"] + stats["attentions"] == read_only_exchanges and stats["attentions"] == 0


def test_namespace_manager_construction_is_cheap(standin, mssql_table):
    from beaker_mssql.namespace import MSSQLNamespaceManager

    web = make_app(standin.url, mssql_table)
    web.get("/set", "x")
    standin.reset_stats()
    opts = {"url": standin.url, "table": mssql_table, "data_dir": None, "digest_filenames": False}
    a = MSSQLNamespaceManager("abc", **opts)
    b = MSSQLNamespaceManager("def", **opts)
    assert a.store is b.store
    assert standin.stats()["requests"] == 0 and standin.stats()["logins"] == 0


def test_options_are_parsed_once_per_process(mssql_url, mssql_table, monkeypatch):
    """Beaker builds a namespace manager per request: after the first, no option parsing at all."""
    import beaker_mssql.namespace as namespace

    parsed = []
    real = namespace.parse_settings
    monkeypatch.setattr(namespace, "parse_settings", lambda options: parsed.append(1) or real(options))
    opts = {"url": mssql_url, "table": mssql_table, "data_dir": None, "digest_filenames": False}
    managers = [namespace.MSSQLNamespaceManager(f"ns{i}", **opts) for i in range(5)]
    assert len(parsed) == 1 and all(m.store is managers[0].store for m in managers)


def test_concurrent_requests(mssql_server, mssql_url, mssql_table):
    results = {}

    def browser(i):
        web = make_app(mssql_url, mssql_table)
        web.get("/set", f"v{i}")
        for _ in range(5):
            assert web.get("/").json["value"] == f"v{i}"
        results[i] = web.get("/").json["id"]

    assert run_threads(browser, 16) == []
    stored = rows(mssql_server, mssql_table)
    assert all(sid in stored for sid in results.values()) and len(results) == 16


def test_entry_point_registration_without_import():
    import subprocess
    import sys

    code = ("import sys; from beaker.cache import clsmap; cls = clsmap['ext:mssql']; "
            "print(cls.__module__ + '.' + cls.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "beaker_mssql.namespace.MSSQLNamespaceManager"


def test_ini_strings_and_create_table(mssql_server, mssql_url, scratch_table):
    web = make_app(mssql_url, scratch_table, create_table="true", pool_size="2", pool_max_overflow="1",
                   retries="0", use_utc="yes", ttl="600", pool_recycle="-1")
    sid = web.get("/set", "ini").json["id"]
    assert web.get("/").json["value"] == "ini"
    assert sid in rows(mssql_server, f"[dbo].[{scratch_table}]")


def test_bad_option_fails_the_request_without_invalidating(mssql_url, mssql_table, recwarn):
    """A configuration error is not corrupt data: no "Invalidating corrupt session", no new cookie."""
    from beaker_mssql import ConfigurationError

    web = make_app(mssql_url, mssql_table, ttl=-5, invalidate_corrupt=True)
    web.set_cookie("beaker.session.id", uuid.uuid4().hex)
    with pytest.raises(ConfigurationError, match="ttl"):
        web.get("/")
    assert not [w for w in recwarn if "Invalidating corrupt session" in str(w.message)]


def test_database_error_on_load_fails_request_not_session(standin, mssql_table):
    """invalidate_corrupt (SessionMiddleware's default) must not turn an outage into a logout."""
    from beaker_mssql import ConnectionFailedError

    web = make_app(standin.url, mssql_table, retries=0, invalidate_corrupt=True)
    sid = web.get("/set", "mine").json["id"]
    standin.faults.drop_next_request()
    with pytest.raises(ConnectionFailedError):
        web.get("/")
    reply = web.get("/").json
    assert reply["id"] == sid and reply["value"] == "mine"
