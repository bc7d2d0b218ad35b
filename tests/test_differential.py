"""Differential test: one app, run on Beaker's ``memory`` backend and on ``ext:mssql`` (the stand-in).

Hypothesis generates sequences of session requests (read, set, delete, invalidate, regenerate, replaying
an old cookie, forged cookies), cache operations (put, get with createfunc, remove, clear) on a cache
without expiry and on one with ``expire = 30``, and clock steps. ``time.time`` (Beaker's clock) and the
stand-in's clock are frozen and advanced together. Both worlds run the same steps; every observable
result (status, body, whether and which cookie is sent, with session ids compared by order of first
appearance) must be equal.

Where they differ, the difference must be one of :data:`DIFFERENCES`, each recognised by a predicate on
what the database actually holds at that step (not by the result itself), and that list is the README
table "Differences from Beaker's file/memory backends" (a test below compares them). After an explained
difference the client starts over (no cookie) and a differing cache key is removed in both worlds, so
one intended difference does not cascade into unexplained ones.

``make test`` runs a bounded number of examples; ``make test-slow`` (CI runs it too) runs many more:
``DIFFERENTIAL_EXAMPLES`` sets the count.
"""

from __future__ import annotations

import dataclasses
import datetime
import http.cookies
import json
import os
import re
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Optional
from unittest import mock
from urllib.parse import parse_qs
from wsgiref.util import setup_testing_defaults

import pytest
from beaker.cache import CacheManager
from beaker.middleware import SessionMiddleware
from beaker.util import parse_cache_config_options
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beaker_mssql import InvalidSessionId, SerializationError, UncachedValueWarning
from beaker_mssql.namespace import close_all
from beaker_mssql.store import validate_sid

pytestmark = pytest.mark.usefixtures("no_attentions")  # every result set is read to its end
EXAMPLES = int(os.environ.get("DIFFERENTIAL_EXAMPLES", "100"))
README = Path(__file__).resolve().parent.parent / "README.md"
COOKIE = "sid"
BASE = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
MISSING = "<missing>"

KEYS: list[Any] = [1, "1", 1.0, True, None, "None", (1, "a"), "é", 2.5, "Key"]
VALUES: list[Any] = ["v", 7, (1, 2), {1: "one"}, datetime.datetime(2026, 1, 2)]
SESSION_VALUES = ["a", "b", "c"]
CLOCK_STEPS = [1, 29, 31, 601, 730, 90_000]


# -- the intended differences (the README table) ------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Context:
    """What a predicate may look at: the step, and what the ext:mssql world's database holds."""

    op: tuple[Any, ...]
    memory: World
    mssql: World
    client: int
    memory_result: Any
    mssql_result: Any


@dataclasses.dataclass(frozen=True)
class Difference:
    readme: str  # the first column of the README table, verbatim
    applies: Callable[[Context], bool]


def _sent_sid(ctx: Context) -> Optional[str]:
    return ctx.mssql.sent.get(ctx.client)


def _row_expired(ctx: Context) -> bool:
    """The session row of the id the client sent existed before the request, and its ttl had passed."""
    expires = ctx.mssql.expires_before
    return ctx.op[0] != "cache" and expires is not None and expires <= ctx.mssql.server_now()


def _deleted(ctx: Context) -> bool:
    """The client sent an id a /delete request ended (a browser drops it; a replay or forger does not)."""
    return ctx.op[0] != "cache" and _sent_sid(ctx) in ctx.mssql.deleted


def _refused(ctx: Context) -> bool:
    sid = _sent_sid(ctx)
    if sid is None:
        return False
    try:
        validate_sid(sid)
    except InvalidSessionId:
        return True
    return False


def _case_variant(ctx: Context) -> bool:
    """Another row's id equals the sent one except for letter case (the case-insensitive key collides)."""
    sid = _sent_sid(ctx)
    if sid is None or _refused(ctx):
        return False
    rows = ctx.mssql.query(f"SELECT [sid] FROM {ctx.mssql.table} WHERE [sid] = %s", sid)
    return any(str(r[0]) != sid for r in rows)


def _json_shapes(ctx: Context) -> bool:
    """The memory value, sent through JSON, is what ext:mssql returned (tuples -> lists, int keys -> str)."""
    if ctx.op[0] != "cache" or ctx.op[2] not in ("get", "getcreate") or not ctx.mssql.json:
        return False
    if ctx.memory_result.get("made") != ctx.mssql_result.get("made"):
        return False
    try:
        return bool(json.loads(json.dumps(ctx.memory.last_value)) == ctx.mssql.last_value)
    except (TypeError, ValueError):
        return False


def _json_uncached(ctx: Context) -> bool:
    """A value JSON cannot encode, computed by get(createfunc): returned, but not stored."""
    return (
        ctx.op[0] == "cache" and ctx.op[2] == "getcreate" and ctx.mssql.json
        and not _json_encodable(VALUES[ctx.op[4]])
        and ctx.mssql_result.get("uncached") is True
    )


def _json_put_refused(ctx: Context) -> bool:
    return (
        ctx.op[0] == "cache" and ctx.op[2] == "put" and ctx.mssql.json
        and not _json_encodable(VALUES[ctx.op[4]]) and ctx.mssql_result.get("refused") is True
    )


def _json_encodable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


DIFFERENCES = [
    Difference("Sessions expire after `ttl`", _row_expired),
    Difference("Replaying a deleted session's cookie", _deleted),
    Difference("A cookie id the backend refuses", _refused),
    Difference("A case variant of another session's id", _case_variant),
    Difference("`serializer = json`: value shapes", _json_shapes),
    Difference("`serializer = json`: a createfunc value JSON cannot encode", _json_uncached),
    Difference("`serializer = json`: `put` of a value JSON cannot encode", _json_put_refused),
]


def test_the_difference_list_is_the_readme_table():
    text = README.read_text(encoding="utf-8")
    section = text.split("## Differences from Beaker's file/memory backends", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| --")]
    first_cells = [row.split(" | ", 1)[0][2:].strip() for row in rows[1:]]  # rows[0] is the header
    assert first_cells == [d.readme for d in DIFFERENCES]


# -- one world: an app on one backend and its clients ---------------------------------------------------
class World:
    """One backend with the shared app, two cookie-keeping clients and the ids they have held."""

    def __init__(self, name: str, session_opts: dict[str, Any], cache_opts: dict[str, Any], tag: str,
                 server: Any = None, table: str = "", json_cache: bool = False) -> None:
        self.name = name
        self.tag = tag  # the same in both worlds, new per example: forged ids never meet an old row
        self.server = server
        self.table = table
        self.json = json_cache
        manager = CacheManager(**cache_opts)
        self.caches = {
            "plain": manager.get_cache("plain" + tag),
            "short": manager.get_cache("short" + tag, expire=30),
        }
        self.app = SessionMiddleware(self._app, **session_opts)
        self.cookies: dict[int, Optional[str]] = {0: None, 1: None}
        self.history: dict[int, list[str]] = {0: [], 1: []}
        self.sent: dict[int, Optional[str]] = {}
        self.deleted: set[str] = set()
        self.labels: dict[str, str] = {}
        self.next_label = 0
        self.last_value: Any = None
        self.expires_before: Optional[datetime.datetime] = None
        self.forged = 0

    # The app: /read /set /delete /invalidate /regenerate and /cache/<name>/<action>.
    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = environ["PATH_INFO"]
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        if path.startswith("/cache/"):
            body = self._cache(path.split("/")[2], path.split("/")[3], query)
        else:
            session = environ["beaker.session"]
            if path == "/set":
                session["value"] = query["v"]
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
            body = {"id": session.id, "value": session.get("value"), "new": session.is_new}
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(body, default=repr).encode()]

    def _cache(self, name: str, action: str, query: dict[str, str]) -> dict[str, Any]:
        cache = self.caches[name]
        self.last_value = None
        key = KEYS[int(query["k"])]
        value = VALUES[int(query["v"])]
        if action == "put":
            try:
                cache.put(key, value)
            except SerializationError:
                return {"refused": True}
            return {}
        if action == "remove":
            cache.remove_value(key)
            return {}
        if action == "clear":
            cache.clear()
            return {}
        made: list[bool] = []

        def create() -> Any:
            made.append(True)
            return value

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UncachedValueWarning)
            try:
                result = cache.get(key, createfunc=create) if query.get("create") else cache.get(key)
            except KeyError:
                result = MISSING
        uncached = any(issubclass(w.category, UncachedValueWarning) for w in caught)
        self.last_value = result
        return {"value": repr(result), "made": bool(made), "uncached": uncached}

    # A browser: keeps the cookie it is given, drops one that has expired.
    def request(self, client: int, path: str, cookie: Any = "keep") -> dict[str, Any]:
        sid = self.cookies[client] if cookie == "keep" else cookie
        self.sent[client] = sid
        environ: dict[str, Any] = {}
        setup_testing_defaults(environ)
        environ["PATH_INFO"], _, environ["QUERY_STRING"] = path.partition("?")
        if sid is not None:
            environ["HTTP_COOKIE"] = f'{COOKIE}="{sid}"'
            self.label(sid)
        self.expires_before = None
        if self.server is not None and sid is not None:  # what the database held before this request
            exact = "[sid] = %s COLLATE Latin1_General_BIN2"
            rows = self.query(f"SELECT [expires] FROM {self.table} WHERE {exact}", sid)
            self.expires_before = rows[0][0] if rows else None
        statuses: list[str] = []
        headers: list[tuple[str, str]] = []

        def start_response(status: str, hdrs: list[tuple[str, str]], exc_info: Any = None) -> None:
            statuses.append(status)
            headers.extend(hdrs)

        body = json.loads(b"".join(self.app(environ, start_response)))
        if "id" in body:
            body["id"] = self.label(body["id"])
        set_cookie = None
        for name, value in headers:
            if name.lower() == "set-cookie":
                morsel = http.cookies.SimpleCookie(value.strip())[COOKIE]
                if _expired(morsel["expires"]):
                    set_cookie = "dropped"
                    self.cookies[client] = None
                else:
                    set_cookie = self.label(morsel.value)
                    self.cookies[client] = morsel.value
        if self.cookies[client] is not None and self.cookies[client] not in self.history[client]:
            self.history[client].append(self.cookies[client])
        if path == "/delete" and sid is not None:
            self.deleted.add(sid)
        return {"status": statuses, "body": body, "cookie": set_cookie}

    def label(self, sid: str) -> str:
        if sid not in self.labels:
            self.labels[sid] = f"id{self.next_label}"
            self.next_label += 1
        return self.labels[sid]

    def restart(self, client: int) -> None:
        self.cookies[client] = None
        self.history[client] = []

    def query(self, sql: str, *params: str) -> list[Any]:
        literals = tuple("N'" + p.replace("'", "''") + "'" for p in params)
        return list(self.server.execute(sql % literals))

    def server_now(self) -> datetime.datetime:
        return self.server.clock.utcnow()


def _expired(expires: str) -> bool:
    if not expires:
        return False
    when = datetime.datetime.strptime(expires, "%a, %d-%b-%Y %H:%M:%S GMT")
    return when.replace(tzinfo=datetime.timezone.utc) < datetime.datetime.now(datetime.timezone.utc)


# -- the steps ----------------------------------------------------------------------------------------
clients = st.integers(0, 1)
session_ops = st.tuples(
    st.just("session"), clients,
    st.sampled_from(["read", "read", "set", "delete", "invalidate", "regenerate"]),
    st.integers(0, len(SESSION_VALUES) - 1),
)
replay_ops = st.tuples(st.just("replay"), clients, st.integers(0, 5))
forge_ops = st.tuples(
    st.just("forge"), clients, st.sampled_from(["space", "long", "case-of-other", "unknown"]),
    st.sampled_from(["read", "set"]),
)
clock_ops = st.tuples(st.just("clock"), st.sampled_from(CLOCK_STEPS))
cache_ops = st.tuples(
    st.just("cache"), st.sampled_from(["plain", "short"]),
    st.sampled_from(["put", "get", "get", "getcreate", "getcreate", "remove", "clear"]),
    st.integers(0, len(KEYS) - 1), st.integers(0, len(VALUES) - 1),
)
steps = st.lists(st.one_of(session_ops, replay_ops, forge_ops, clock_ops, cache_ops), min_size=3, max_size=40)


def run_step(world: World, op: tuple[Any, ...], other: World) -> Optional[dict[str, Any]]:
    """Apply one step to ``world``; ``other`` is only used to keep forged ids parallel."""
    kind = op[0]
    if kind == "session":
        _, client, action, value = op
        path = {"read": "/read", "set": f"/set?v={SESSION_VALUES[value]}"}.get(action, "/" + action)
        return world.request(client, path)
    if kind == "replay":
        _, client, index = op
        history = world.history[client]
        if not history:
            return None
        return world.request(client, "/read", cookie=history[index % len(history)])
    if kind == "forge":
        _, client, how, action = op
        path = "/read" if action == "read" else "/set?v=forged"
        if how == "space":
            forged: Optional[str] = world.tag + " "
        elif how == "long":
            forged = world.tag * 32
        elif how == "unknown":  # a valid id nobody was given; a new one each time, the same in both worlds
            world.forged += 1
            forged = f"{world.tag}{world.forged:024x}"
        else:
            victim = world.cookies[1 - client]
            forged = victim.upper() if victim else None
        if forged is None:
            return None
        world.cookies[client] = forged
        return world.request(client, path)
    if kind == "cache":
        _, name, action, key, value = op
        create = "&create=1" if action == "getcreate" else ""
        verb = "get" if action.startswith("get") else action
        return world.request(0, f"/cache/{name}/{verb}?k={key}&v={value}{create}", cookie=None)
    return None


@pytest.fixture(autouse=True)
def fresh_registry():
    yield
    close_all()


def run_both(standin: Any, table: str, ops: list[tuple[Any, ...]], timeout: Optional[int] = None,
             cache_serializer: str = "pickle", **session_extra: Any) -> list[tuple[str, list[str]]]:
    """Run ``ops`` on both worlds; fail on an unexplained difference, else return each (step, reasons)."""
    # Forged ids are built from the tag; "case-of-other" upper-cases one. With an all-digit tag (~2 % of
    # uuid4 prefixes) that would be the very same id, not a case variant: keep a letter in it.
    tag = "f" + uuid.uuid4().hex[:7]
    session_opts: dict[str, Any] = {"key": COOKIE, "timeout": timeout, **session_extra}
    memory = World("memory", dict(session_opts, type="memory"), {"type": "memory"}, tag)
    cache_config = {"cache.type": "ext:mssql", "cache.url": standin.url, "cache.table": table,
                    "cache.serializer": cache_serializer}
    mssql = World(
        "ext:mssql",
        dict(session_opts, type="ext:mssql", url=standin.url, table=table),
        parse_cache_config_options(cache_config),
        tag, server=standin, table=table, json_cache=cache_serializer == "json",
    )
    clock = {"now": BASE.timestamp()}
    standin.clock.freeze()
    standin.clock.set(BASE)
    trace: list[str] = []
    explained: list[tuple[str, list[str]]] = []
    with mock.patch("time.time", lambda: clock["now"]), warnings.catch_warnings():
        warnings.simplefilter("ignore", UncachedValueWarning)
        for op in ops:
            if op[0] == "clock":
                clock["now"] += op[1]
                standin.clock.advance(op[1])
                trace.append(f"clock +{op[1]}")
                continue
            got_memory = run_step(memory, op, mssql)
            got_mssql = run_step(mssql, op, memory)
            trace.append(f"{op}: memory={got_memory} mssql={got_mssql}")
            if got_memory == got_mssql:
                continue
            client = op[1] if op[0] in ("session", "replay", "forge") else 0
            ctx = Context(op, memory, mssql, client, (got_memory or {})["body"], (got_mssql or {})["body"])
            reasons = [d.readme for d in DIFFERENCES if d.applies(ctx)]
            assert reasons, "unexplained difference:\n" + "\n".join(trace)
            explained.append((trace[-1], reasons))
            if op[0] == "cache":  # that key starts over in both worlds
                for world in (memory, mssql):
                    world.caches[op[1]].remove_value(KEYS[op[3]])
            else:
                memory.restart(client)
                mssql.restart(client)
            # Ids issued from now on get the same labels again in both worlds.
            memory.next_label = mssql.next_label = max(memory.next_label, mssql.next_label)
    return explained


@pytest.mark.standin_only
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=steps,
    timeout=st.sampled_from([None, 600]),
    cache_serializer=st.sampled_from(["pickle", "json"]),
    data_serializer=st.sampled_from(["pickle", "json"]),
    invalidate_corrupt=st.booleans(),  # False is what pyramid_beaker passes
)
def test_memory_and_mssql_agree_except_for_the_documented_differences(
    standin, mssql_table, ops, timeout, cache_serializer, data_serializer, invalidate_corrupt
):
    run_both(standin, mssql_table, ops, timeout, cache_serializer,
             data_serializer=data_serializer, invalidate_corrupt=invalidate_corrupt)


# One scripted sequence per row of the table: the difference is real, and only its own predicate explains it.
SCRIPTS: dict[str, tuple[list[tuple[Any, ...]], Optional[int], str]] = {
    "Sessions expire after `ttl`": (
        [("session", 0, "set", 0), ("clock", 90_000), ("session", 0, "read", 0)], None, "pickle"),
    "Replaying a deleted session's cookie": (
        [("session", 0, "set", 0), ("session", 0, "delete", 0), ("replay", 0, 0)], None, "pickle"),
    "A cookie id the backend refuses": ([("forge", 0, "space", "read")], None, "pickle"),
    "A case variant of another session's id": (
        [("session", 1, "set", 0), ("forge", 0, "case-of-other", "set")], None, "pickle"),
    "`serializer = json`: value shapes": (
        [("cache", "plain", "put", 0, 2), ("cache", "plain", "get", 0, 0)], None, "json"),
    "`serializer = json`: a createfunc value JSON cannot encode": (
        [("cache", "plain", "getcreate", 0, 4)], None, "json"),
    "`serializer = json`: `put` of a value JSON cannot encode": (
        [("cache", "plain", "put", 0, 4)], None, "json"),
}


def test_every_difference_has_a_script():
    assert list(SCRIPTS) == [d.readme for d in DIFFERENCES]


@pytest.mark.standin_only
@pytest.mark.parametrize("readme", list(SCRIPTS))
def test_each_documented_difference_happens_and_is_recognised(standin, mssql_table, readme):
    ops, timeout, serializer = SCRIPTS[readme]
    explained = run_both(standin, mssql_table, ops, timeout, serializer)
    assert [reasons for _, reasons in explained] == [[readme]], explained


def test_with_the_same_settings_there_is_no_difference(standin, mssql_table):
    """The same steps as the scripts, where the documented cause is absent: both worlds agree."""
    ops = [("session", 0, "set", 0), ("clock", 601), ("session", 0, "read", 0), ("session", 1, "set", 1),
           ("forge", 0, "unknown", "set"), ("cache", "plain", "put", 0, 2), ("cache", "plain", "get", 0, 0),
           ("cache", "short", "getcreate", 1, 4), ("clock", 31), ("cache", "short", "getcreate", 1, 4)]
    assert run_both(standin, mssql_table, ops, 600, "pickle") == []


def test_labels_compare_ids_by_first_appearance():
    world = World("memory", {"key": COOKIE, "type": "memory"}, {"type": "memory"}, "x")
    assert [world.label(s) for s in ("b", "a", "b")] == ["id0", "id1", "id0"]
    assert re.fullmatch(r"id\d+", world.label("c"))
