"""The session write path (issue 10): exchanges per request, no lost updates, freshness by the database clock.

Overlapping requests are made to overlap for certain: both load, wait on a barrier, then save. Clocks
move by ``standin.clock.advance`` (the database) and a patched ``time.time`` in Beaker (the app host),
never by sleeping.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any, Callable

import pytest
from beaker.middleware import SessionMiddleware
from beaker.session import Session

import beaker_mssql.namespace as ns_module
from beaker_mssql.integrations import end_session
from beaker_mssql.testing import SQLServerStandIn
from tests.helpers import WSGIClient, run_threads

pytestmark = [pytest.mark.filterwarnings("ignore::beaker.exceptions.BeakerWarning"),
              pytest.mark.usefixtures("no_attentions")]


def options(url: str, table: str, **extra: Any) -> dict[str, Any]:
    base = {"session.type": "ext:mssql", "session.url": url, "session.table": table,
            "session.data_serializer": "json"}
    base.update({f"session.{k}": v for k, v in extra.items()})
    return base


def direct(url: str, table: str, sid: str, **extra: Any) -> Session:
    """A Beaker Session on the row ``sid`` (loading it now), as one request would hold it."""
    params = {"type": "ext:mssql", "url": url, "table": table, "data_serializer": "json"}
    params.update(extra)
    return Session({}, id=sid, use_cookies=False, **params)


def exchanges(server: SQLServerStandIn) -> int:
    stats = server.stats()
    return int(stats["requests"]) + int(stats["attentions"])


@pytest.mark.parametrize("serializer", ["json", "pickle"])
@pytest.mark.parametrize(("touch_interval", "read_only"), [(None, 1), (0, 2)])
def test_exchanges_per_request_kind(standin, mssql_table, serializer, touch_interval, read_only):
    extra: dict[str, Any] = {"data_serializer": serializer}
    if touch_interval is not None:
        extra["touch_interval"] = touch_interval

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        session = environ["beaker.session"]
        if environ["PATH_INFO"] == "/write":
            session["n"] = session.get("n", 0) + 1
            session.save()
        body = str(session.get("n")).encode()  # read before start_response, where Beaker saves
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    client = WSGIClient(SessionMiddleware(app, options(standin.url, mssql_table, **extra)))
    client.get("/write")  # warm-up: the pool has its connection
    standin.reset_stats()
    assert client.get("/write") == "2"
    assert exchanges(standin) == 2
    standin.reset_stats()
    assert client.get("/read") == "2"
    assert exchanges(standin) == read_only
    assert standin.stats()["attentions"] == 0


class Overlap:
    """A WSGI app whose requests load the session, then meet at a barrier, then change it and save."""

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=30)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        session = environ["beaker.session"]
        session.get("_")  # load now
        self.barrier.wait()
        query = dict(part.split("=", 1) for part in environ["QUERY_STRING"].split("&") if part)
        if "delete" in query:
            end_session(session)
        else:
            for key, value in query.items():
                session[key] = value
            session.save()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]


def _seed(url: str, table: str, sid: str, **data: Any) -> None:
    session = direct(url, table, sid)
    session.update(data)
    session.save()


def _overlap(url: str, table: str, sid: str, first: str, second: str) -> None:
    app = SessionMiddleware(Overlap(2), options(url, table))
    errors = run_threads(lambda n: WSGIClient(app, cookie=f"beaker.session.id={sid}").get(
        "/?" + (first if n == 0 else second)), 2)
    assert errors == []


def test_overlapping_requests_keep_both_changes(mssql_url, mssql_table):
    sid = uuid.uuid4().hex
    _seed(mssql_url, mssql_table, sid, kept="yes")
    _overlap(mssql_url, mssql_table, sid, "a=1", "b=2")
    after = direct(mssql_url, mssql_table, sid)
    assert (after["a"], after["b"], after["kept"]) == ("1", "2", "yes")


def test_same_key_the_later_save_wins_and_deleted_keys_stay_deleted(mssql_url, mssql_table):
    sid = uuid.uuid4().hex
    _seed(mssql_url, mssql_table, sid, k="0", gone="x", other="o")
    one, two = direct(mssql_url, mssql_table, sid), direct(mssql_url, mssql_table, sid)  # both loaded
    one["k"] = "one"
    del one["gone"]
    one.save()
    two["k"] = "two"
    two["new"] = "n"
    two.save()  # conflicts (the row changed since it loaded), re-reads and merges
    after = direct(mssql_url, mssql_table, sid)
    assert after["k"] == "two"  # documented: the save that commits later wins a key both changed
    assert "gone" not in after  # one's deletion survives two's save, which never touched "gone"
    assert (after["new"], after["other"]) == ("n", "o")


@pytest.mark.parametrize("order", ["logout-first", "save-first"])
def test_logout_racing_a_save_is_never_undone(mssql_server, mssql_url, mssql_table, order):
    sid = uuid.uuid4().hex
    _seed(mssql_url, mssql_table, sid, user="alice")
    if order == "logout-first":
        _overlap(mssql_url, mssql_table, sid, "delete=1", "cart=full")
    else:  # the save commits first, then the logout deletes the row
        slow = direct(mssql_url, mssql_table, sid)
        slow["cart"] = "full"
        slow.save()
        end_session(direct(mssql_url, mssql_table, sid))
    rows = mssql_server.execute(f"SELECT COUNT(*) FROM {mssql_table} WHERE [sid] = N'{sid}'")
    assert rows == [(0,)]
    assert direct(mssql_url, mssql_table, sid).is_new


def test_a_save_after_the_logout_does_not_recreate_the_row(mssql_server, mssql_url, mssql_table):
    sid = uuid.uuid4().hex
    _seed(mssql_url, mssql_table, sid, user="alice")
    slow = direct(mssql_url, mssql_table, sid)  # a slow request loaded the session...
    end_session(direct(mssql_url, mssql_table, sid))  # ...the user logs out meanwhile...
    slow["cart"] = "full"
    slow.save()  # ...and the slow request saves afterwards
    assert mssql_server.execute(f"SELECT COUNT(*) FROM {mssql_table} WHERE [sid] = N'{sid}'") == [(0,)]


def test_encrypted_sessions_last_writer_wins_but_delete_still_wins(mssql_server, mssql_url, mssql_table):
    pytest.importorskip("cryptography")
    crypt = {"encrypt_key": "k" * 32, "validate_key": "v" * 32, "data_serializer": "json"}
    sid = uuid.uuid4().hex
    seed = direct(mssql_url, mssql_table, sid, **crypt)
    seed["a"] = "0"
    seed.save()
    one, two = direct(mssql_url, mssql_table, sid, **crypt), direct(mssql_url, mssql_table, sid, **crypt)
    one["a"] = "one"
    one.save()
    two["b"] = "two"
    two.save()  # opaque data: no merge, the later save replaces the row
    after = direct(mssql_url, mssql_table, sid, **crypt)
    assert (after["a"], after["b"]) == ("0", "two")
    three = direct(mssql_url, mssql_table, sid, **crypt)
    end_session(direct(mssql_url, mssql_table, sid, **crypt))
    three["c"] = "late"
    three.save()
    assert mssql_server.execute(f"SELECT COUNT(*) FROM {mssql_table} WHERE [sid] = N'{sid}'") == [(0,)]


def test_sixteen_threads_on_one_session_lose_no_update(mssql_url, mssql_table):
    """16 threads x 200 requests on one session id, each thread counting in a key of its own: every
    increment survives the others' concurrent saves (each merge keeps the other threads' keys)."""
    threads, per_thread = 16, 200
    sid = uuid.uuid4().hex

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        session = environ["beaker.session"]
        key = environ["QUERY_STRING"]
        session[key] = session.get(key, 0) + 1
        session.save()
        body = str(session[key]).encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    wsgi = SessionMiddleware(app, options(mssql_url, mssql_table, pool_size=4, pool_max_overflow=12))

    def client(n: int) -> None:
        c = WSGIClient(wsgi, cookie=f"beaker.session.id={sid}")
        for _ in range(per_thread):
            c.get(f"/?t{n}")
        assert c.sid == sid

    assert run_threads(client, threads, timeout=300) == []
    after = direct(mssql_url, mssql_table, sid)
    counts = {f"t{n}": after.get(f"t{n}") for n in range(threads)}
    assert counts == {f"t{n}": per_thread for n in range(threads)}


class HostClock:
    """``time`` for beaker.session with a movable ``time()`` (the app host's clock)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture
def clocks(standin, monkeypatch):
    """Advance the database and the app host together: ``clocks(seconds)``."""
    import beaker.session

    host = HostClock()
    monkeypatch.setattr(beaker.session, "time", host)
    standin.clock.freeze()

    def advance(seconds: float) -> None:
        standin.clock.advance(seconds)
        host.offset += seconds

    return advance


def _reader(url: str, table: str, **extra: Any) -> WSGIClient:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        session = environ["beaker.session"]
        if environ["PATH_INFO"] == "/login":
            session["user"] = "alice"
            session.save()
        body = str(session.get("user")).encode()  # read before start_response, where Beaker saves
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    return WSGIClient(SessionMiddleware(app, options(url, table, **extra)))


def test_read_only_traffic_keeps_the_session_alive_and_idleness_expires_it(standin, mssql_table, clocks):
    client = _reader(standin.url, mssql_table, ttl=300, touch_interval=60)
    assert client.get("/login") == "alice"
    standin.reset_stats()
    writes = 0
    for _ in range(10):  # 10 reads 50 s apart: 500 s in all, well past the 300 s ttl
        clocks(50)
        before = standin.stats()["requests"]
        assert client.get("/") == "alice"
        writes += standin.stats()["requests"] - before - 1
    assert 0 < writes < 10  # some reads skipped their write, and the row was still refreshed in time
    clocks(301)  # now idle for longer than the ttl
    assert client.get("/") == "None"


def test_beaker_timeout_fires_at_most_touch_interval_early(standin, mssql_table, clocks):
    """timeout 600 -> touch_seconds = min(60, ttl/2, 600/10) = 60: a read-only request within 60 s of
    the last write is not written, so Beaker's idle check can fire up to 60 s early, never more."""
    timeout, touch = 600, 60
    extra = {"timeout": timeout, "touch_interval": 3600}  # capped to a tenth of the timeout

    early = _reader(standin.url, mssql_table, **extra)
    assert early.get("/login") == "alice"
    clocks(50)
    assert early.get("/") == "alice"  # not written: the row is 50 s old
    clocks(timeout - touch + 1)  # 541 s after the last access, 591 s after the last write
    assert early.get("/") == "alice"  # the bound: alive until timeout - touch after the last access

    late = _reader(standin.url, mssql_table, **extra)
    assert late.get("/login") == "alice"
    clocks(50)
    assert late.get("/") == "alice"
    clocks(timeout - 1)  # idle 599 s since the last access, but 649 s since the stored access time
    assert late.get("/") == "None"  # fired 50 s early: within the documented 60 s


def test_settings_cap_touch_interval(mssql_url, mssql_table):
    store = ns_module.store_for(
        {"url": mssql_url, "table": mssql_table, "timeout": 720, "touch_interval": 3600})
    assert (store.settings.idle_timeout, store.settings.touch_seconds) == (600, 60)
    store = ns_module.store_for({"url": mssql_url, "table": mssql_table, "ttl": 30})
    assert store.settings.touch_seconds == 15  # half the ttl: an active session never expires


def test_a_second_save_after_a_logout_in_between_does_not_recreate_the_row(
    mssql_server, mssql_url, mssql_table
):
    """A request that saves twice: a logout between its saves must win over the second one too."""
    sid = uuid.uuid4().hex
    _seed(mssql_url, mssql_table, sid, user="alice")
    busy = direct(mssql_url, mssql_table, sid)
    busy["step"] = 1
    busy.save()
    end_session(direct(mssql_url, mssql_table, sid))
    busy["step"] = 2
    busy.save()
    assert mssql_server.execute(f"SELECT COUNT(*) FROM {mssql_table} WHERE [sid] = N'{sid}'") == [(0,)]
    again = direct(mssql_url, mssql_table, sid)
    assert again.is_new
