"""Beaker caches end to end: CacheManager, cache regions and decorators with ``cache.type = ext:mssql``."""

from __future__ import annotations

import threading

import pytest
from beaker.cache import CacheManager, cache_regions
from beaker.util import parse_cache_config_options
from helpers import CreationLockPileUp, run_threads

from beaker_mssql import SerializationError
from beaker_mssql.namespace import MSSQLNamespaceManager, close_all, encode_part

pytestmark = pytest.mark.usefixtures("no_attentions")  # every result set is read to its end


@pytest.fixture(autouse=True)
def fresh_registry():
    yield
    close_all()
    cache_regions.clear()


def manager(url, table, **extra):
    config = {"cache.type": "ext:mssql", "cache.url": url, "cache.table": table}
    config.update({f"cache.{k}": v for k, v in extra.items()})
    return CacheManager(**parse_cache_config_options(config))


def sids(server, table):
    return sorted(r[0] for r in server.execute(f"SELECT [sid] FROM {table}"))


def test_put_get_remove(mssql_server, mssql_url, mssql_table):
    cache = manager(mssql_url, mssql_table).get_cache("things")
    cache.put("alpha", {"n": 1})
    assert cache.get("alpha") == {"n": 1}
    assert "alpha" in cache and "beta" not in cache
    assert sids(mssql_server, mssql_table) == ["things:alpha"]  # readable row ids
    cache.remove_value("alpha")
    assert "alpha" not in cache
    with pytest.raises(KeyError):
        cache.get("alpha")


def test_createfunc_and_expiry_by_server_clock(standin, mssql_table):
    cache = manager(standin.url, mssql_table).get_cache("calc", expire=60)
    calls = []

    def create():
        calls.append(1)
        return len(calls)

    assert cache.get("k", createfunc=create) == 1
    assert cache.get("k", createfunc=create) == 1
    standin.clock.advance(61)  # the row's expires passed on the server
    assert cache.get("k", createfunc=create) == 2
    assert len(calls) == 2


def test_cache_read_is_one_round_trip(standin, mssql_table):
    cache = manager(standin.url, mssql_table).get_cache("rt")
    cache.put("k", "v")
    cache.get("k")
    standin.reset_stats()
    assert cache.get("k") == "v"  # `key in ns` then `ns[key]`: served by one SELECT
    assert standin.stats()["requests"] == 1


def test_namespace_removal_only_touches_that_namespace(mssql_server, mssql_url, mssql_table):
    cm = manager(mssql_url, mssql_table)
    a, a2, b = cm.get_cache("a_b"), cm.get_cache("a%b"), cm.get_cache("axb")
    for cache in (a, a2, b):
        cache.put("k1", 1)
        cache.put("k2", 2)
    a.clear()  # LIKE 'a\_b:%' must not match 'axb:...'
    assert "k1" not in a and "k1" in a2 and "k2" in b
    assert len(sids(mssql_server, mssql_table)) == 4


def test_keys(mssql_url, mssql_table):
    ns = MSSQLNamespaceManager("keys.ns", url=mssql_url, table=mssql_table)
    ns["one"] = 1
    ns[b"two"] = 2
    ns["Mixed Case"] = 3
    assert sorted(ns.keys()) == ["Mixed Case", "one", "two"]
    assert MSSQLNamespaceManager("other", url=mssql_url, table=mssql_table).keys() == []


def test_long_keys_are_hashed_and_distinct(mssql_server, mssql_url, mssql_table):
    cache = manager(mssql_url, mssql_table).get_cache("long")
    k1, k2 = "x" * 1000 + "1", "x" * 1000 + "2"
    cache.put(k1, "one")
    cache.put(k2, "two")
    assert cache.get(k1) == "one" and cache.get(k2) == "two"
    assert all(len(s) <= 255 for s in sids(mssql_server, mssql_table))


def test_long_namespace(mssql_url, mssql_table):
    cache = manager(mssql_url, mssql_table).get_cache("N" * 400)
    cache.put("k", "v")
    assert cache.get("k") == "v"


def test_keys_differing_only_by_case(mssql_url, mssql_table):
    cache = manager(mssql_url, mssql_table).get_cache("case")
    cache.put("Key", "upper")
    cache.put("key", "lower")
    cache.put("KEY", "all")
    assert (cache.get("Key"), cache.get("key"), cache.get("KEY")) == ("upper", "lower", "all")


def test_encode_part():
    assert encode_part("plain.key-1", 100) == "plain.key-1"
    assert encode_part("Key", 100) == "~x" + b"Key".hex()
    assert encode_part("a:b", 100).startswith("~x")  # ':' separates namespace from key
    assert encode_part("x" * 300, 100).startswith("~h")
    assert encode_part("Key", 100) != encode_part("key", 100)


def test_regions(standin, mssql_table):
    config = {
        "cache.regions": "short, long",
        "cache.type": "ext:mssql",
        "cache.short.expire": "10",
        "cache.short.url": standin.url,
        "cache.short.table": mssql_table,
        "cache.long.expire": "3600",
        "cache.long.url": standin.url,
        "cache.long.table": mssql_table,
    }
    cm = CacheManager(**parse_cache_config_options(config))
    counter = {"n": 0}

    @cm.region("short", "fn")
    def short(x):
        counter["n"] += 1
        return x * 2

    @cm.region("long", "fn")
    def long(x):
        counter["n"] += 1
        return x * 3

    assert short(2) == 4 and short(2) == 4 and long(2) == 6 and long(2) == 6
    assert counter["n"] == 2
    standin.clock.advance(11)
    assert short(2) == 4 and long(2) == 6
    assert counter["n"] == 3  # only the short region expired
    cm.region_invalidate(long, "long", "fn", 2)
    assert long(2) == 6 and counter["n"] == 4


def test_json_serializer_and_unencodable_value(mssql_server, mssql_url, mssql_table):
    cache = manager(mssql_url, mssql_table, serializer="json").get_cache("js")
    cache.put("k", {"a": [1, 2]})
    assert cache.get("k") == {"a": [1, 2]}
    text = mssql_server.execute(f"SELECT [session] FROM {mssql_table}")[0][0]
    assert text.startswith("[")  # plain JSON of Beaker's (stored, expire, value)
    with pytest.raises(SerializationError, match="bad"):
        cache.put("bad", object())
    assert "bad" not in cache


def test_creation_lock_across_managers(mssql_url, mssql_table):
    """Two managers (as in two processes) share the dogpile lock through sp_getapplock."""
    ns1 = MSSQLNamespaceManager("dog", url=mssql_url, table=mssql_table)
    ns2 = MSSQLNamespaceManager("dog", url=mssql_url, table=mssql_table, pool_size=3)
    lock1, lock2 = ns1.get_creation_lock("k"), ns2.get_creation_lock("k")
    assert lock1.acquire(wait=False) is True
    result = []
    t = threading.Thread(target=lambda: result.append(lock2.acquire(wait=False)))
    t.start()
    t.join()
    assert result == [False]
    lock1.release()

    def take():
        result.append(lock2.acquire(wait=True))
        lock2.release()

    t = threading.Thread(target=take)
    t.start()
    t.join()
    assert result == [False, True]


def test_dogpile_createfunc_runs_once(mssql_server, mssql_url, mssql_table, monkeypatch):
    """4 threads find the value missing; the first to get the creation lock creates it while the other
    3 are known to wait on that lock (blocked on the stand-in's app lock): createfunc runs once."""
    cache = manager(mssql_url, mssql_table).get_cache("dogpile")
    store = cache.namespace.store
    pile = CreationLockPileUp(store, 4, mssql_server, blocked_on_server=3)  # default pool: 5 + 10
    monkeypatch.setattr(store, "acquire_applock", pile.acquire_applock)

    def create():
        return f"value {pile.wait_for_pile_up()}"

    results = []
    assert run_threads(lambda _: results.append(cache.get("k", createfunc=create)), 4) == []
    assert results == ["value 1"] * 4 and pile.created == 1
