"""Issue 16, items 4 and 5 (and issue 15's "1 and '1', None and 'None' share a row").

4. Cache keys of different types map to rows the way Beaker's memory/file/database backends tell dict
   keys apart: ``1`` and ``'1'`` are two entries, ``2`` and ``2.0`` one. Every comparison here runs the
   same operations through a ``CacheManager`` on Beaker's ``memory`` backend and on ``ext:mssql``, so the
   reference answers are measured, not written down. Row ids stay within 255 characters and
   collation-safe, and rows of string keys written by 0.1.0 stay readable.
5. ``serializer = json``: a value JSON cannot encode, computed by ``get(createfunc=...)``, is returned
   uncached with a warning naming the key as text; ``put`` of such a value raises.
"""

from __future__ import annotations

import base64
import datetime
import math
import pickle
import time
import uuid
import warnings
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from beaker.cache import CacheManager, cache_regions
from beaker.util import parse_cache_config_options
from hypothesis import given, settings
from hypothesis import strategies as st

from beaker_mssql import InvalidCacheKey, SerializationError, UncachedValueWarning
from beaker_mssql.namespace import close_all, decode_key, encode_key

pytestmark = pytest.mark.usefixtures("no_attentions")  # every result set is read to its end
UTC = datetime.timezone.utc
PLUS_TWO = datetime.timezone(datetime.timedelta(hours=2))
MISSING = "<KeyError>"


@pytest.fixture(autouse=True)
def fresh_registry():
    yield
    close_all()
    cache_regions.clear()


def mssql_cache(url: str, table: str, name: str, **extra: Any):
    config = {"cache.type": "ext:mssql", "cache.url": url, "cache.table": table}
    config.update({f"cache.{k}": v for k, v in extra.items()})
    return CacheManager(**parse_cache_config_options(config)).get_cache(name)


def memory_cache(name: str):
    return CacheManager(type="memory").get_cache(name + uuid.uuid4().hex)


def run(cache, operations: list[tuple[str, Any, Any]]) -> list[Any]:
    """Apply ('put', key, value) / ('get', key, None) / ('remove', key, None); what each get saw."""
    seen: list[Any] = []
    for op, key, value in operations:
        if op == "put":
            cache.put(key, value)
        elif op == "remove":
            cache.remove_value(key)
        else:
            try:
                seen.append(cache.get(key))
            except KeyError:
                seen.append(MISSING)
    return seen


def rows(server: Any, table: str) -> list[str]:
    return sorted(str(r[0]) for r in server.execute(f"SELECT [sid] FROM {table}"))


# -- item 4: keys of different types ------------------------------------------------------------------
KEY_SCENARIOS: dict[str, list[tuple[str, Any, Any]]] = {
    "int-vs-str": [("put", 1, "int"), ("put", "1", "str"), ("get", 1, None), ("get", "1", None)],
    "int-then-float": [("put", 2, "two"), ("get", 2.0, None), ("get", Decimal(2), None), ("get", "2", None)],
    "bool-is-int": [("put", True, "true"), ("get", 1, None), ("get", 1.0, None), ("get", "True", None)],
    "none-vs-str": [
        ("put", None, "none"), ("get", "None", None), ("put", "None", "text"), ("get", None, None)
    ],
    "float-vs-fraction": [("put", 2.5, "f"), ("get", Fraction(5, 2), None), ("get", Decimal("2.5"), None)],
    "decimal-not-float": [("put", Decimal("0.1"), "dec"), ("get", 0.1, None), ("get", Fraction(1, 10), None)],
    "str-vs-bytes": [("put", "k", "str"), ("get", b"k", None)],
    "non-ascii-str": [("put", "é", "e-acute"), ("get", "\\xe9", None), ("get", "É", None)],
    "tuples": [
        ("put", (1, "a"), "tuple"),
        ("get", (1.0, "a"), None),
        ("get", (1, b"a"), None),
        ("get", ("1", "a"), None),
        ("get", (1, ("a",)), None),
    ],
    "frozenset": [("put", frozenset({1, 2}), "set"), ("get", frozenset({2.0, 1}), None)],
    "dates": [
        ("put", datetime.date(2026, 1, 2), "date"),
        ("get", datetime.datetime(2026, 1, 2), None),
        ("put", datetime.datetime(2026, 1, 2, 12, tzinfo=UTC), "aware"),
        ("get", datetime.datetime(2026, 1, 2, 14, tzinfo=PLUS_TWO), None),
        ("get", datetime.datetime(2026, 1, 2, 12), None),
    ],
    "uuid": [
        ("put", uuid.UUID(int=7), "uuid"), ("get", uuid.UUID(int=7), None),
        ("get", str(uuid.UUID(int=7)), None),
    ],
    "typed-text-lookalike": [
        ("put", 1, "int"), ("put", "~i1", "text"), ("get", 1, None), ("get", "~i1", None)
    ],
    "remove-one-type": [("put", 1, "int"), ("put", "1", "str"), ("remove", 1, None), ("get", "1", None)],
}


@pytest.mark.parametrize("name", list(KEY_SCENARIOS))
def test_keys_map_to_rows_like_the_memory_backend(mssql_server, mssql_table, name):
    operations = KEY_SCENARIOS[name]
    expected = run(memory_cache(name), operations)
    assert run(mssql_cache(mssql_server.url, mssql_table, name), operations) == expected


def test_issue_examples_through_cache_manager(mssql_server, mssql_table):
    cache = mssql_cache(mssql_server.url, mssql_table, "issue16")
    cache.put(1, "int")
    cache.put("1", "str")
    assert (cache.get(1), cache.get("1")) == ("int", "str")  # two entries, as memory/file/database keep
    cache.put(2, "two")
    assert cache.get(2.0) == "two"
    cache.put(None, "none")
    with pytest.raises(KeyError):
        cache.get("None")
    assert rows(mssql_server, mssql_table) == ["issue16:1", "issue16:~i1", "issue16:~i2", "issue16:~n"]


def test_rows_of_string_keys_written_before_stay_readable(mssql_server, mssql_table):
    """0.1.0 wrote string keys as 'ns:key' (readable) or 'ns:~x<hex>'; those sids must not change."""
    value = base64.b64encode(pickle.dumps((time.time(), None, "old"), protocol=4)).decode("ascii")
    for sid in ("legacy:alpha", "legacy:~x416c706861"):  # 'alpha' and 'Alpha'
        mssql_server.execute(
            f"INSERT INTO {mssql_table} ([sid], [session], [expires]) "
            f"VALUES (N'{sid}', N'{value}', DATEADD(second, 3600, GETUTCDATE()))"
        )
    cache = mssql_cache(mssql_server.url, mssql_table, "legacy")
    assert cache.get("alpha") == "old" and cache.get("Alpha") == "old"


@pytest.mark.parametrize(
    ("key", "named"),
    [([1, 2], "list"), ({"a": 1}, "dict"), (object(), "object"), (float("nan"), "NaN"),
     (Decimal("NaN"), "NaN"), (complex(1, 2), "complex"), ((1, [2]), "list")],
)
def test_keys_without_a_row_form_are_refused_clearly(mssql_server, mssql_table, key, named):
    cache = mssql_cache(mssql_server.url, mssql_table, "refuse")
    with pytest.raises(InvalidCacheKey, match=named):
        cache.put(key, "x")
    with pytest.raises(TypeError):  # generic code that catches TypeError (as for unhashable keys) still works
        cache.get(key)
    assert rows(mssql_server, mssql_table) == []


def test_numbers_beyond_float_range_keep_exact_forms():
    huge = Decimal("1" + "0" * 400 + ".5")  # exact (Decimal arithmetic would round it)
    assert encode_key(huge, 250) == encode_key(Fraction(huge), 250) != encode_key(Decimal("1e400"), 250)
    assert encode_key(Decimal("1e400"), 250) == encode_key(10**400, 250)


def test_long_typed_keys_are_hashed_apart_from_long_string_keys(mssql_server, mssql_table):
    cache = mssql_cache(mssql_server.url, mssql_table, "long")
    tuple_key = tuple(range(200))
    text_key = "x" * 400
    cache.put(tuple_key, "tuple")
    cache.put(text_key, "text")
    assert cache.get(tuple(float(i) for i in range(200))) == "tuple"
    assert cache.get(text_key) == "text"
    sids = rows(mssql_server, mssql_table)
    assert len(sids) == 2 and all(len(s) <= 255 for s in sids)
    assert {s.split(":", 1)[1][:2] for s in sids} == {"~g", "~h"}


# Keys as Beaker hands them to the backend: Cache turns str into bytes (ascii, backslashreplace).
scalar_keys = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.decimals(allow_nan=False, places=3),
    st.fractions(max_denominator=50),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.dates(),
    st.datetimes(timezones=st.one_of(st.none(), st.just(UTC), st.just(PLUS_TWO))),
    st.uuids(),
)
any_keys = st.recursive(
    scalar_keys,
    lambda inner: st.one_of(st.tuples(inner, inner), st.lists(inner, max_size=3).map(tuple),
                            st.frozensets(scalar_keys, max_size=3)),
    max_leaves=6,
)


def as_beaker_key(key: Any) -> Any:
    return key.encode("ascii", "backslashreplace") if isinstance(key, str) else key


@settings(max_examples=300, deadline=None)
@given(any_keys, any_keys)
def test_two_keys_share_a_row_exactly_when_they_are_one_dict_key(a, b):
    a, b = as_beaker_key(a), as_beaker_key(b)
    same_entry = len({a: 1, b: 2}) == 1  # what memory, file and database backends do
    assert (encode_key(a, 150) == encode_key(b, 150)) is same_entry


@settings(max_examples=300, deadline=None)
@given(any_keys, st.integers(min_value=80, max_value=255))
def test_row_ids_are_short_collation_safe_and_decode_back(key, limit):
    key = as_beaker_key(key)
    text = encode_key(key, limit)
    assert len(text) <= limit
    assert text.isascii() and text == text.lower() and text == text.rstrip()  # CI, trailing-space-insensitive
    if text.startswith("~") and not text.startswith(("~x", "~h", "~g")):
        assert decode_key(text) == key


# -- item 5: serializer = json ------------------------------------------------------------------------
UNENCODABLE = {
    "datetime": lambda: datetime.datetime(2026, 1, 2, 3, 4, 5),
    "set": lambda: {1, 2, 3},
    "nan": lambda: math.nan,
}


@pytest.mark.parametrize("kind", list(UNENCODABLE))
def test_json_createfunc_value_is_returned_uncached_with_a_warning(mssql_server, mssql_table, kind):
    cache = mssql_cache(mssql_server.url, mssql_table, "js", serializer="json")
    calls: list[Any] = []

    def create():
        calls.append(1)
        return UNENCODABLE[kind]()

    with pytest.warns(UncachedValueWarning) as caught:
        first = cache.get("dt", createfunc=create)
    expected = UNENCODABLE[kind]()
    assert first == expected or (kind == "nan" and math.isnan(first))
    message = str(caught[0].message)
    assert "'dt'" in message and "b'dt'" not in message  # the key as the application wrote it
    assert "json" in message
    assert rows(mssql_server, mssql_table) == []  # nothing half-written
    with pytest.warns(UncachedValueWarning):
        cache.get("dt", createfunc=create)
    assert len(calls) == 2  # not cached: computed again, as a miss would be


def test_json_createfunc_through_a_cache_region(mssql_server, mssql_table):
    from beaker.cache import cache_region

    cache_regions["js_region"] = {
        "type": "ext:mssql", "url": mssql_server.url, "table": mssql_table,
        "serializer": "json", "expire": 60,
    }

    @cache_region("js_region")
    def today(offset):
        return datetime.date(2026, 1, 1) + datetime.timedelta(days=offset)

    with pytest.warns(UncachedValueWarning):
        assert today(1) == datetime.date(2026, 1, 2)


def test_json_put_of_an_unencodable_value_still_raises(mssql_server, mssql_table):
    cache = mssql_cache(mssql_server.url, mssql_table, "js", serializer="json")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UncachedValueWarning)
        with pytest.raises(SerializationError) as info:
            cache.put("dt", datetime.datetime(2026, 1, 2))
    assert "'dt'" in str(info.value) and "b'dt'" not in str(info.value)
    assert rows(mssql_server, mssql_table) == []


def test_json_put_inside_a_createfunc_still_raises(mssql_server, mssql_table):
    """Only the value get() computed is returned uncached; an explicit put stays an error."""
    cache = mssql_cache(mssql_server.url, mssql_table, "js", serializer="json")

    def create():
        cache.put("other", {1, 2})
        return "fine"

    with pytest.raises(SerializationError, match="'other'"):
        cache.get("k", createfunc=create)


def test_json_round_trip_turns_tuples_into_lists_and_int_keys_into_strings(mssql_server, mssql_table):
    """What the README says json does to values (plain JSON semantics)."""
    cache = mssql_cache(mssql_server.url, mssql_table, "js", serializer="json")
    cache.put("k", {"pair": (1, 2), 3: "three"})
    assert cache.get("k") == {"pair": [1, 2], "3": "three"}
    memory = memory_cache("js")
    memory.put("k", {"pair": (1, 2), 3: "three"})
    assert memory.get("k") == {"pair": (1, 2), 3: "three"}  # the documented difference


def test_namespace_keys_come_back_with_their_types(mssql_server, mssql_table):
    cache = mssql_cache(mssql_server.url, mssql_table, "typedkeys")
    for key in (1, "1", None, (1, "a"), 2.5, datetime.date(2026, 1, 2)):
        cache.put(key, "x")
    keys = cache.namespace.keys()
    assert sorted(map(repr, keys)) == sorted(
        map(repr, ["1", 1, None, (1, "a"), 2.5, datetime.date(2026, 1, 2)])
    )


def test_pickle_createfunc_value_that_cannot_be_pickled_is_returned_uncached(mssql_server, mssql_table):
    """The same rule for every serializer: a computed value is never lost to its encoding."""
    cache = mssql_cache(mssql_server.url, mssql_table, "pk")
    value = lambda: None  # noqa: E731 - pickle cannot encode a lambda
    with pytest.warns(UncachedValueWarning, match="'fn'"):
        assert cache.get("fn", createfunc=lambda: value) is value
    assert rows(mssql_server, mssql_table) == []
    with pytest.raises(SerializationError, match="'fn'"):
        cache.put("fn", value)
