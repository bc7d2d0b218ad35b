"""Hostile and odd input: table names, session ids, cache keys and namespaces, payloads, option values.

Everything goes through real pymssql. Each case either works exactly (stored and found byte for byte,
never mixed up with a similar id) or is refused with a clear error *before* anything reaches the server
(the stand-in's request counter is unchanged). Counter checks are skipped against a real server.
"""

from __future__ import annotations

import base64
import json
import pickle
import secrets
import uuid
import zlib
from collections.abc import Iterator
from typing import Any, Callable, Optional
from wsgiref.util import setup_testing_defaults

import pytest
from beaker.cache import Cache
from beaker.middleware import SessionMiddleware
from beaker.session import Session
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beaker_mssql.config import parse_table_name
from beaker_mssql.errors import (
    ConfigurationError,
    CorruptSessionError,
    InvalidSessionId,
    MSSQLStoreError,
    SerializationError,
    SidCaseConflictError,
    sqlserver_equivalent,
)
from beaker_mssql.namespace import close_all
from beaker_mssql.store import MSSQLStore

HYPOTHESIS = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    close_all()
    yield
    close_all()


def requests(server: Any) -> Optional[int]:
    """The stand-in's request counter (None on a real server, which has none)."""
    return int(server.stats()["requests"]) if getattr(server, "is_standin", False) else None


@pytest.fixture
def store(mssql_server: Any, mssql_table: str) -> Iterator[MSSQLStore]:
    with MSSQLStore(url=mssql_server.url, table=mssql_table) as s:
        s.length()  # warm the pool so later request counts are exact
        yield s


def count_rows(server: Any, table: str) -> int:
    return int(server.execute(f"SELECT COUNT(*) FROM {table}")[0][0])


# -- table names --------------------------------------------------------------------------------------
BAD_TABLE_NAMES = [
    "sess'ions",
    'sess"ions',
    "sessions; DROP TABLE users",
    "sessions;",
    "sessions--",
    "sessions /* x */",
    "a/*b*/c",
    "dbo.sessions; --",
    "[dbo].[sessions]; DROP TABLE x",
    "[sessions",
    "sessions]",
    "[dbo].[x]]",
    "[a]b",
    "db.dbo.sessions",
    "srv.db.dbo.sessions",
    "séssions",
    "sessions\u202e",
    "tab\x00le",
    "[tab\nle]",
    "x" * 129,
    "dbo." + "y" * 129,
    "[" + "z" * 129 + "]",
    "",
    "   ",
    ".sessions",
    "dbo.",
    "dbo..sessions",
    "sessions x",
    "sessions(1)",
    "1sessions",
]


@pytest.mark.parametrize("name", BAD_TABLE_NAMES)
def test_bad_table_name_refused_at_configuration(mssql_server: Any, name: str) -> None:
    before = requests(mssql_server)
    with pytest.raises(ConfigurationError) as info:
        MSSQLStore(url=mssql_server.url, table=name)
    message = str(info.value)
    assert "table" in message
    assert repr(name) in message or name.strip() in message
    assert requests(mssql_server) == before


@pytest.mark.parametrize("name", ["sessions", "dbo.sessions", "[dbo].[sessions]", "[Sessions 2024]"])
def test_good_table_names_parse(name: str) -> None:
    table = parse_table_name(name)
    assert table.schema == "dbo"
    assert parse_table_name(table.quoted) == table


@pytest.mark.parametrize(
    "name",
    ["[we;ird]", "[it's]", "[with -- dash]", "[ünï/*cødé*/]",
     *(pytest.param(n, marks=pytest.mark.engine_needs("bracket_escapes"))
       for n in ("[a]]b]", "[x]]; DROP TABLE y; --]"))],
)
def test_bracketed_odd_table_names_are_literal_names_never_sql(
    mssql_server: Any, mssql_table: str, name: str
) -> None:
    """Bracket-quoted names may hold any printable text in SQL Server. Either refuse them at configuration
    or treat them as one literal name: the table is created under exactly that name and nothing else
    (in particular no other table) is touched."""
    try:
        table = parse_table_name(name)
    except ConfigurationError as exc:
        assert "table" in str(exc)
        return
    with MSSQLStore(url=mssql_server.url, table=name) as s:
        try:
            s.create_table()
            s.set("k", "v")
            assert s.get("k") == "v"
            assert s.check_table() == []
        finally:
            mssql_server.execute(
                f"IF OBJECT_ID(N'{table.quoted.replace(chr(39), chr(39) * 2)}', N'U') IS NOT NULL "
                f"DROP TABLE {table.quoted}"
            )
    assert count_rows(mssql_server, mssql_table) == 0  # the fixture table still exists


@HYPOTHESIS
@given(st.text(max_size=300))
def test_any_table_name_is_refused_or_quotes_safely(text: str) -> None:
    """Property: parse_table_name either refuses or yields parts whose quoted form parses back to them."""
    try:
        table = parse_table_name(text)
    except ConfigurationError as exc:
        assert "table" in str(exc)
        return
    assert 1 <= len(table.schema) <= 128 and 1 <= len(table.name) <= 128
    for part in (table.schema, table.name):
        assert not any(ord(c) < 32 or ord(c) == 127 for c in part)
    assert parse_table_name(table.quoted) == table
    # Outside brackets, the quoted form has exactly one dot and no other SQL at all.
    inner = table.quoted[1:-1].replace("]]", "")
    assert inner.count("].[") == 1


# -- session ids -----------------------------------------------------------------------------------
ODD_SIDS = [
    "O'Brien",
    "''; DROP TABLE x; --",
    "100%",
    "%",
    "_",
    "a_c",
    "[abc]",
    "[",
    "]",
    "a\\b",
    "\\",
    "N'x'",
    "ünïcødé ✓",
    "日本語のセッション",
    "emoji-😀-𝄞",
    " leading-space",
    "tab-free but -- comment",
    "/* c */",
    "x" * 255,
    "é" * 255,
]


@pytest.mark.parametrize("sid", ODD_SIDS)
def test_odd_session_ids_round_trip_exactly(store: MSSQLStore, mssql_server: Any, sid: str) -> None:
    data = "payload for " + sid
    store.set(sid, data)  # a legal id (1-255 characters, no control characters): must work
    assert store.get(sid) == data
    assert store.all() == {sid: data}
    assert store.touch(sid)
    assert store.destroy(sid)
    assert store.get(sid) is None
    assert count_rows(mssql_server, store.settings.table.quoted) == 0


def test_non_bmp_sid_that_fits_the_column_round_trips(store: MSSQLStore) -> None:
    """127 emoji are 254 UTF-16 code units: they fit nvarchar(255)."""
    sid = "😀" * 127
    store.set(sid, "data")
    assert store.get(sid) == "data"
    assert store.all() == {sid: "data"}


def test_non_bmp_sid_longer_than_the_column_refused_before_any_request(
    store: MSSQLStore, mssql_server: Any
) -> None:
    """nvarchar(255) holds 255 UTF-16 code units; 128 emoji are 128 Python characters but 256 code units.
    SQL Server refuses the row (error 2628, string would be truncated) -- so the store must refuse the id
    itself, like any other id that cannot be stored, before sending anything."""
    sid = "😀" * 128
    before = requests(mssql_server)
    with pytest.raises(InvalidSessionId):
        store.set(sid, "data")
    assert requests(mssql_server) == before
    assert count_rows(mssql_server, store.settings.table.quoted) == 0


@pytest.mark.parametrize("units", [255, 256])
def test_server_counts_nvarchar_length_in_utf16_code_units(
    mssql_server: Any, mssql_table: str, units: int
) -> None:
    """What the store's own check mirrors: nvarchar(255) holds 255 UTF-16 code units, and an emoji is
    two. SQL Server refuses 128 emoji (256 units) with error 2628; the stand-in must do the same, or
    tests against it would pass for ids a real server rejects."""
    sid = "😀" * (units // 2) + "x" * (units % 2)
    insert = (
        f"INSERT INTO {mssql_table} ([sid], [session], [expires]) "
        f"VALUES (N'{sid}', N'x', DATEADD(second, 60, GETUTCDATE()))"
    )
    if units <= 255:
        mssql_server.execute(insert)
        assert count_rows(mssql_server, mssql_table) == 1
    else:
        with pytest.raises(Exception) as info:
            mssql_server.execute(insert)
        # 2628 on SQL Server; Babelfish says 33557097 "value too long" (errors.sqlserver_equivalent)
        error = info.value
        number = getattr(error, "number", None)
        assert "truncated" in str(error).lower() or sqlserver_equivalent(number, str(error)) == 2628
        assert count_rows(mssql_server, mssql_table) == 0


@pytest.mark.parametrize(
    "sid",
    ["", "x" * 256, "é" * 256, "a\x00b", "a\nb", "tab\there", "bell\x07", "del\x7f", "trailing ", "  "],
)
def test_unusable_session_ids_refused_before_any_request(
    store: MSSQLStore, mssql_server: Any, sid: str
) -> None:
    before = requests(mssql_server)
    for call in (
        lambda: store.set(sid, "x"),
        lambda: store.get(sid),
        lambda: store.destroy(sid),
        lambda: store.touch(sid),
    ):
        with pytest.raises(InvalidSessionId) as info:
            call()
        assert "session id" in str(info.value)
    assert requests(mssql_server) == before
    assert count_rows(mssql_server, store.settings.table.quoted) == 0


@pytest.mark.parametrize("bad", [None, 42, b"bytes", ["list"]])
def test_non_string_session_id_refused(store: MSSQLStore, mssql_server: Any, bad: Any) -> None:
    before = requests(mssql_server)
    with pytest.raises(InvalidSessionId):
        store.set(bad, "x")
    assert requests(mssql_server) == before


@pytest.mark.parametrize(
    "pair",
    [("CaseKey", "casekey"), ("abc", "ABC"), ("straße", "STRASSE"), ("ǅ", "ǆ"), ("i", "I"), ("ß", "ss")],
)
def test_case_variants_never_read_or_overwrite_each_other(
    store: MSSQLStore, mssql_server: Any, pair: tuple[str, str]
) -> None:
    first, second = pair
    store.set(first, "data-of-first")
    assert store.get(second) is None, "a case variant found another session's row"
    try:
        store.set(second, "data-of-second")
    except SidCaseConflictError as exc:
        assert first not in str(exc) or len(first) <= 8  # at most a short prefix is shown
        assert store.get(second) is None
    else:
        assert store.get(second) == "data-of-second"
    assert store.get(first) == "data-of-first", "saving a case variant overwrote another session"
    assert store.destroy(second) in (True, False)
    assert store.get(first) == "data-of-first", "destroying a case variant deleted another session"
    assert store.touch(second) is False or store.get(second) is not None


def test_trailing_space_variant_cannot_address_another_row(store: MSSQLStore) -> None:
    store.set("abc", "mine")
    with pytest.raises(InvalidSessionId):
        store.get("abc ")
    with pytest.raises(InvalidSessionId):
        store.destroy("abc ")
    assert store.get("abc") == "mine"


HOSTILE_COOKIE_IDS = [
    "O'Brien",
    "100%",
    "a_c",
    "[x]",
    "x" * 300,
    "trailing ",
    "ABCDEF0123456789ABCDEF0123456789",
    "; DROP TABLE sessions; --",
]


def _request_with_cookie(app: Callable[..., Any], cookie_id: str) -> dict[str, Any]:
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ["HTTP_COOKIE"] = "beaker.session.id=" + cookie_id.replace(";", "%3B")
    statuses: list[str] = []
    body = b"".join(app(environ, lambda status, headers, exc_info=None: statuses.append(status)))
    assert statuses == ["200 OK"]
    result: dict[str, Any] = json.loads(body)
    return result


# Only ids that have a case variant (another user's id differing by letter case) to attack.
CASE_ATTACK_IDS = [
    c for c in HOSTILE_COOKIE_IDS if c.swapcase().strip() != c.strip() and len(c.strip()) <= 255
]


@pytest.mark.parametrize("cookie_id", CASE_ATTACK_IDS)
def test_hostile_session_cookie_never_reaches_a_case_variant_session(
    mssql_server: Any, mssql_table: str, cookie_id: str
) -> None:
    """A client may send any session id in its cookie. If another session's id differs from it only by
    letter case, the request must neither see nor overwrite that session: it gets a fresh session, or a
    clear error (SidCaseConflictError / InvalidSessionId) -- never the victim's data."""
    victim = cookie_id.swapcase().strip()
    victim_row = _beaker_blob({"user": "victim"}, "json")
    _insert_raw(mssql_server, mssql_table, victim.replace("'", "''"), victim_row)
    opts = {"type": "ext:mssql", "url": mssql_server.url, "table": mssql_table, "data_serializer": "json"}
    app = SessionMiddleware(session_app, **opts)
    try:
        result = _request_with_cookie(app, cookie_id)
    except (SidCaseConflictError, InvalidSessionId):
        pass  # refused clearly
    else:
        assert result["user"] != "victim"
    rows = mssql_server.execute(f"SELECT [sid], [session] FROM {mssql_table}")
    assert (victim, victim_row) in [(str(a), str(b)) for a, b in rows] or any(
        str(a) == victim and "victim" in str(b) for a, b in rows
    ), "the victim's row was changed"


# Ids a browser can send as is in a Cookie header (no ';' or space) and that fit the sid column.
COOKIE_SAFE_IDS = [
    c for c in HOSTILE_COOKIE_IDS if len(c) <= 255 and c == c.strip() and ";" not in c and " " not in c
]


@pytest.mark.parametrize("cookie_id", COOKIE_SAFE_IDS)
def test_odd_but_legal_cookie_id_finds_exactly_its_own_session(
    mssql_server: Any, mssql_table: str, cookie_id: str
) -> None:
    _insert_raw(
        mssql_server, mssql_table, cookie_id.replace("'", "''"), _beaker_blob({"user": "owner"}, "json")
    )
    opts = {"type": "ext:mssql", "url": mssql_server.url, "table": mssql_table, "data_serializer": "json"}
    result = _request_with_cookie(SessionMiddleware(session_app, **opts), cookie_id)
    assert result == {"id": cookie_id, "user": "owner", "is_new": False}


# -- cache keys and namespaces (Beaker Cache over ext:mssql) -----------------------------------------
def make_cache(server: Any, table: str, namespace: str, **options: Any) -> Cache:
    return Cache(namespace, type="ext:mssql", url=server.url, table=table, **options)


ODD_KEYS = [
    "O'Brien",
    "100%",
    "a_b",
    "[x]",
    "\\",
    "ünï",
    "😀",
    "ctrl\x00\x01\n",
    "Key",
    "key",
    "KEY",
    "k" * 300,
    "k" * 300 + "!",
    "",
    " ",
    "  ",
    42,
    ("tuple", 1),
]


def test_odd_cache_keys_are_distinct_and_exact(mssql_server: Any, mssql_table: str) -> None:
    cache = make_cache(mssql_server, mssql_table, "odd-keys")
    for i, key in enumerate(ODD_KEYS):
        cache.set_value(key, {"i": i, "key": repr(key)})
    for i, key in enumerate(ODD_KEYS):
        assert cache.get_value(key) == {"i": i, "key": repr(key)}, key
    assert count_rows(mssql_server, mssql_table) == len(ODD_KEYS)
    cache.remove_value("Key")
    assert cache.get_value("key") == {"i": ODD_KEYS.index("key"), "key": repr("key")}
    assert not cache.has_key("Key")


NAMESPACE_PAIRS = [
    ("a_c", "abc"),
    ("a%", "ab"),
    ("a%", "a%b"),
    ("a[b]", "ab"),
    ("a[b]", "a]"),
    ("a[bc]", "ab"),
    ("a\\", "a\\b"),
    ("ns", "ns2"),
    ("ns", "NS"),
    ("ns", "ns:x"),
    ("", "x"),
    ("ns" * 80, "ns" * 80 + "x"),
    ("%", "anything"),
    ("_", "x"),
]


@pytest.mark.parametrize("pair", NAMESPACE_PAIRS)
def test_namespace_removal_never_deletes_another_namespace(
    mssql_server: Any, mssql_table: str, pair: tuple[str, str]
) -> None:
    removed, kept = pair
    a = make_cache(mssql_server, mssql_table, removed)
    b = make_cache(mssql_server, mssql_table, kept)
    for key in ("k1", "K1", "k_2", "k%"):
        a.set_value(key, f"A:{key}")
        b.set_value(key, f"B:{key}")
    assert count_rows(mssql_server, mssql_table) == 8
    a.clear()
    for key in ("k1", "K1", "k_2", "k%"):
        assert b.get_value(key) == f"B:{key}", f"removing {removed!r} touched {kept!r}"
        assert not a.has_key(key)
    assert count_rows(mssql_server, mssql_table) == 4
    # And the other way round.
    a.set_value("again", 1)
    b.clear()
    assert a.get_value("again") == 1
    assert count_rows(mssql_server, mssql_table) == 1


def test_session_namespace_removal_keeps_similar_sessions(store: MSSQLStore, mssql_server: Any) -> None:
    """Deleting Beaker session 'a_c' (namespace removal in session mode) keeps 'abc' and 'a_c2'."""
    from beaker_mssql.namespace import MSSQLNamespaceManager

    table = store.settings.table.quoted
    for sid in ("a_c", "abc", "a_c2", "A_C"):
        try:
            store.set(sid, "{}")
        except SidCaseConflictError:
            pass
    before = set(store.all())
    ns = MSSQLNamespaceManager("a_c", url=mssql_server.url, table=table, digest_filenames=False)
    ns.remove()
    assert set(store.all()) == before - {"a_c"}


# -- payloads -------------------------------------------------------------------------------------------
class Unencodable:
    pass


@pytest.mark.parametrize(
    "value", [Unencodable(), {1, 2}, b"bytes", float("nan"), float("inf"), {"k": object()}, 1j]
)
def test_json_cache_refuses_unencodable_values_before_writing(
    mssql_server: Any, mssql_table: str, value: Any
) -> None:
    cache = make_cache(mssql_server, mssql_table, "json-ns", serializer="json")
    cache.set_value("warm", 1)
    before = requests(mssql_server)
    with pytest.raises(SerializationError) as info:
        cache.set_value("k", value)
    assert "json" in str(info.value) and "'k'" in str(info.value)
    assert requests(mssql_server) == before
    assert count_rows(mssql_server, mssql_table) == 1
    assert not cache.has_key("k")


def test_ten_megabyte_session_store_level(store: MSSQLStore) -> None:
    data = secrets.token_hex(5_000_000)  # 10,000,000 characters, incompressible
    store.set("big", data)
    assert store.get("big") == data
    assert len(store.all()["big"]) == 10_000_000


def test_ten_megabyte_session_through_beaker(mssql_server: Any, mssql_table: str) -> None:
    opts = {"type": "ext:mssql", "url": mssql_server.url, "table": mssql_table, "data_serializer": "json"}
    big = secrets.token_hex(5_000_000)
    s = Session({}, use_cookies=False, **opts)
    s["big"] = big
    s["unicode"] = "ünï 😀" * 1000
    s.save()
    loaded = Session({}, id=s.id, use_cookies=False, **opts)
    assert loaded["big"] == big
    assert loaded["unicode"] == "ünï 😀" * 1000


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for i in range(depth):
        value = {"d": value, "i": i} if i % 2 else [value, i]
    return value


@pytest.mark.parametrize("serializer", ["json", "pickle"])
def test_deeply_nested_session_round_trips(mssql_server: Any, mssql_table: str, serializer: str) -> None:
    opts = {"type": "ext:mssql", "url": mssql_server.url, "table": mssql_table, "data_serializer": serializer}
    s = Session({}, use_cookies=False, **opts)
    s["deep"] = nested(400)
    s.save()
    assert Session({}, id=s.id, use_cookies=False, **opts)["deep"] == nested(400)


def test_too_deeply_nested_session_fails_in_the_request_without_writing(
    mssql_server: Any, mssql_table: str
) -> None:
    opts = {"type": "ext:mssql", "url": mssql_server.url, "table": mssql_table, "data_serializer": "json"}
    s = Session({}, use_cookies=False, **opts)
    s["v"] = "ok"
    s.save()
    s["deep"] = nested(100_000)
    with pytest.raises((RecursionError, ValueError, MSSQLStoreError)):
        s.save()
    assert Session({}, id=s.id, use_cookies=False, **opts)["v"] == "ok"
    assert count_rows(mssql_server, mssql_table) == 1


# -- corrupt and foreign rows -------------------------------------------------------------------------
def _insert_raw(server: Any, table: str, sid: str, text: str) -> None:
    literal = "N'" + text.replace("'", "''") + "'"
    server.execute(
        f"INSERT INTO {table} ([sid], [session], [expires]) "
        f"VALUES (N'{sid}', {literal}, DATEADD(second, 3600, GETUTCDATE()))"
    )


def _beaker_blob(data: dict[str, Any], serializer: str) -> str:
    if serializer == "json":
        return base64.b64encode(zlib.compress(json.dumps(data).encode("utf-8"))).decode("ascii")
    return base64.b64encode(pickle.dumps(data)).decode("ascii")


CONNECT_MSSQL_V2_ROW = json.dumps(
    {
        "cookie": {
            "originalMaxAge": 86400000,
            "expires": "2026-11-28T19:00:00.000Z",
            "httpOnly": True,
            "path": "/",
        },
        "user": "node-user",
    }
)

CORRUPT_ROWS = {
    "truncated-json": '{"_accessed_time": 1.0, "user": "x", "items": [1, 2',
    "json-array": "[1, 2, 3]",
    "json-scalar-brace": "{1}",
    "garbage": "%%% not base64 %%%",
    "empty": "",
    "base64-of-junk": base64.b64encode(b"\x00\x01junk").decode("ascii"),
    "pickle-for-json": _beaker_blob({"user": "pickled", "_accessed_time": 1.0}, "pickle"),
    "truncated-base64": _beaker_blob({"user": "x" * 100}, "json")[:-7],
}


def session_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    session = environ["beaker.session"]
    body = json.dumps({"id": session.id, "user": session.get("user"), "is_new": session.is_new})
    session["seen"] = True
    session.save()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body.encode("utf-8")]


# Every corrupt row for both session serializers, except a pickle row read by a pickle session
# (which is not corrupt at all).
CORRUPT_CASES = [
    (kind, serializer)
    for kind in sorted(CORRUPT_ROWS)
    for serializer in ("json", "pickle")
    if not (kind == "pickle-for-json" and serializer == "pickle")
]


@pytest.mark.parametrize(("kind", "serializer"), CORRUPT_CASES)
def test_corrupt_row_is_invalidated_never_crashes_or_leaks(
    mssql_server: Any, mssql_table: str, kind: str, serializer: str
) -> None:
    sid = uuid.uuid4().hex
    other = uuid.uuid4().hex
    _insert_raw(mssql_server, mssql_table, sid, CORRUPT_ROWS[kind])
    _insert_raw(mssql_server, mssql_table, other, _beaker_blob({"user": "someone-else"}, serializer))
    opts = {"type": "ext:mssql", "url": mssql_server.url, "table": mssql_table, "data_serializer": serializer}
    # invalidate_corrupt=True (SessionMiddleware's default): a fresh session, never another user's data.
    app = SessionMiddleware(session_app, invalidate_corrupt=True, **opts)
    result = _request_with_cookie(app, sid)
    assert result["user"] != "someone-else"
    assert result["is_new"] is True
    assert result["id"] != sid
    # The other user's row is untouched and still readable.
    assert Session({}, id=other, use_cookies=False, **opts)["user"] == "someone-else"
    # invalidate_corrupt=False: a specific error, not a crash of the worker and not a silent new session.
    with pytest.raises(Exception) as info:
        Session({}, id=sid, use_cookies=False, invalidate_corrupt=False, **opts)
    assert not isinstance(info.value, (KeyError, TypeError, SystemExit, MemoryError)), info.value


def test_corrupt_json_row_raises_corrupt_session_error(mssql_server: Any, mssql_table: str) -> None:
    sid = uuid.uuid4().hex
    _insert_raw(mssql_server, mssql_table, sid, CORRUPT_ROWS["truncated-json"])
    opts = {"type": "ext:mssql", "url": mssql_server.url, "table": mssql_table, "data_serializer": "json"}
    with pytest.raises(CorruptSessionError) as info:
        Session({}, id=sid, use_cookies=False, invalidate_corrupt=False, **opts)
    assert sid not in str(info.value)  # a live session id is not written into messages whole


@pytest.mark.parametrize("serializer", ["json", "pickle"])
def test_connect_mssql_v2_row_is_read_or_invalidated(
    mssql_server: Any, mssql_table: str, serializer: str
) -> None:
    """A row written by the Node.js connect-mssql-v2 store (plain JSON with a 'cookie' object)."""
    sid = uuid.uuid4().hex
    _insert_raw(mssql_server, mssql_table, sid, CONNECT_MSSQL_V2_ROW)
    opts = {"type": "ext:mssql", "url": mssql_server.url, "table": mssql_table, "data_serializer": serializer}
    app = SessionMiddleware(session_app, invalidate_corrupt=True, **opts)
    result = _request_with_cookie(app, sid)
    if result["is_new"]:
        assert result["user"] is None and result["id"] != sid
    else:  # json sessions can read it: the same sid's own data, nothing else
        assert serializer == "json"
        assert result == {"id": sid, "user": "node-user", "is_new": False}


# -- option values of the wrong type or range --------------------------------------------------------
BAD_OPTIONS: list[tuple[str, Any]] = [
    ("ttl", -1),
    ("ttl", 0),
    ("ttl", "soon"),
    ("ttl", 1.5),
    ("ttl", True),
    ("auto_remove_interval", 0),
    ("auto_remove_interval", -5),
    ("auto_remove_interval", "often"),
    ("auto_remove_interval", float("nan")),
    ("auto_remove_batch_size", 0),
    ("auto_remove", "maybe"),
    ("create_table", "perhaps"),
    ("use_utc", 2),
    ("serializer", "yaml"),
    ("serializer", "no.such.module:Serializer"),
    ("serializer", 42),
    ("retries", -1),
    ("retries", "twice"),
    ("pool_size", 0),
    ("pool_size", "many"),
    ("pool_max_overflow", -1),
    ("pool_timeout", 0),
    ("pool_recycle", 0),
    ("login_timeout", 0),
    ("login_timeout", "slow"),
    ("query_timeout", -1),
    ("port", "abc"),
    ("port", 0),
    ("port", 70000),
    ("url", "http://example.com/db"),
    ("url", "not a url"),
    ("url", 42),
    ("url", "mssql://sa:pw@127.0.0.1:notaport/test"),
    ("url", "mssql://sa:pw@127.0.0.1:1433/test?bogus=1"),
    ("table", 42),
    ("table", ""),
    ("tds_version", "9.9"),
    ("encrypt", "sometimes"),
    ("on_error", "not_a_module_xyz.fn"),
    ("on_error", 42),
]


@pytest.mark.parametrize("key,value", BAD_OPTIONS, ids=[f"{k}={v!r}" for k, v in BAD_OPTIONS])
def test_bad_option_value_one_clear_error(mssql_server: Any, key: str, value: Any) -> None:
    options: dict[str, Any] = {"url": mssql_server.url}
    options[key] = value
    before = requests(mssql_server)
    with pytest.raises(ConfigurationError) as info:
        MSSQLStore(**options)
    message = str(info.value)
    named = key if key != "url" or "notaport" not in str(value) else "port"
    assert named in message, message
    if key != "url" or "://" not in str(value):
        shown = repr(value) if not isinstance(value, str) else value
        assert shown in message or repr(value) in message, message
    if mssql_server.password:
        assert mssql_server.password not in message
    assert requests(mssql_server) == before


def test_bad_url_never_shows_its_password() -> None:
    with pytest.raises(ConfigurationError) as info:
        MSSQLStore(url="ftp://sa:TopSecret-123@db.example.com/sessions")
    assert "TopSecret-123" not in str(info.value)
    with pytest.raises(ConfigurationError) as info:
        MSSQLStore(url="mssql://sa:TopSecret-123@db.example.com:99999/sessions")
    assert "TopSecret-123" not in str(info.value)


def test_bad_option_through_beaker_fails_the_request_clearly(mssql_server: Any, mssql_table: str) -> None:
    app = SessionMiddleware(session_app, type="ext:mssql", url=mssql_server.url, table=mssql_table, ttl=-5)
    with pytest.raises(ConfigurationError) as info:
        _request_with_cookie(app, uuid.uuid4().hex)
    assert "ttl" in str(info.value)


# -- property-based round trips -----------------------------------------------------------------------
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)
session_dicts = st.dictionaries(
    st.text(max_size=20).filter(lambda k: not k.startswith("_")), json_values, max_size=8
)


@HYPOTHESIS
@given(data=session_dicts)
def test_property_store_level_json_round_trip(store: MSSQLStore, data: dict[str, Any]) -> None:
    from beaker_mssql.payload import decode_session, encode_session

    blob = _beaker_blob(data, "json")
    store.set("prop-sid", encode_session(blob))
    text = store.get("prop-sid")
    assert text is not None
    back = json.loads(zlib.decompress(base64.b64decode(decode_session(text, "prop-sid"))))
    assert back == data
    # Raw JSON text (non-ASCII kept as is) survives the nvarchar round trip unchanged too.
    raw = json.dumps(data, ensure_ascii=False)
    store.set("prop-raw", raw)
    assert store.get("prop-raw") == raw


@HYPOTHESIS
@given(data=session_dicts)
def test_property_beaker_json_session_round_trip(
    mssql_server: Any, mssql_table: str, data: dict[str, Any]
) -> None:
    opts = {"type": "ext:mssql", "url": mssql_server.url, "table": mssql_table, "data_serializer": "json"}
    s = Session({}, use_cookies=False, **opts)
    s.update(data)
    s.save()
    loaded = Session({}, id=s.id, use_cookies=False, **opts)
    assert not loaded.is_new
    assert {k: v for k, v in loaded.items() if not k.startswith("_")} == data


@HYPOTHESIS
@given(key=st.text(max_size=300) | st.binary(max_size=40), value=json_values)
def test_property_cache_key_round_trip(mssql_server: Any, mssql_table: str, key: Any, value: Any) -> None:
    cache = make_cache(mssql_server, mssql_table, "prop", serializer="json")
    cache.set_value(key, value)
    assert cache.get_value(key) == value
    cache.remove_value(key)
    assert not cache.has_key(key)
