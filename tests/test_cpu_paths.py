"""The per-request fast paths (issue 14) give the same answers as the general code they shortcut.

Pure functions, no server: each fast path is checked against the slower definition it replaces, on
inputs chosen to sit on either side of every rule.
"""

from __future__ import annotations

import base64
import json
import zlib

import pytest
from beaker import util

from beaker_mssql import CorruptSessionError, InvalidSessionId
from beaker_mssql.merge import BlobFormat, decode_blob, decode_blob_text
from beaker_mssql.payload import (
    _wrap_json,
    _wrap_json_stored,
    decode_session,
    decode_session_row,
    encode_decoded_session,
    encode_session,
    is_emptied_dict,
    is_emptied_session,
)
from beaker_mssql.store import _utf16_length, validate_sid


def json_blob(d: object, level: int = -1) -> str:
    return base64.b64encode(zlib.compress(json.dumps(d).encode("utf-8"), level)).decode("ascii")


def pickle_blob(d: object) -> str:
    return base64.b64encode(util.PickleSerializer().dumps(d)).decode("ascii")


def _junk_after_stream() -> str:
    return base64.b64encode(zlib.compress(b'{"a": 1}') + b"junk").decode("ascii")


def _non_canonical_base64() -> str:
    good = json_blob({"a": 1})
    raw = base64.b64decode(good)
    assert len(raw) % 3  # the last quantum has spare bits to set
    body = good.rstrip("=")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    twin = body[:-1] + alphabet[alphabet.index(body[-1]) + 1] + "=" * (len(good) - len(body))
    assert base64.b64decode(twin) == raw and twin != good
    return twin


def _truncated() -> str:
    return base64.b64encode(zlib.compress(b'{"a": 1}')[:-2]).decode("ascii")


FOREIGN_TEXT = '{"a": "' + " ".join(f"xq{i}" for i in range(40)) + '"}'


def _filtered() -> str:
    """zlib's default header, but bytes that zlib.compress(text) would not make (Z_FILTERED)."""
    packer = zlib.compressobj(6, zlib.DEFLATED, 15, 8, zlib.Z_FILTERED)
    raw = packer.compress(FOREIGN_TEXT.encode()) + packer.flush()
    assert raw[:2] == b"\x78\x9c" and raw != zlib.compress(FOREIGN_TEXT.encode())
    return base64.b64encode(raw).decode("ascii")


def _rewrap_rule(blob: str) -> str:
    """The definition the fast rule replaces: store the JSON text iff re-wrapping it gives the blob."""
    try:
        text = zlib.decompress(base64.b64decode(blob, validate=True)).decode("utf-8")
        parsed = json.loads(text)
    except Exception:
        return blob
    if isinstance(parsed, dict) and text.startswith("{") and _wrap_json(text) == blob:
        return text
    return blob


BLOBS = [
    json_blob({"user": "bob", "_accessed_time": 1.5}),
    json_blob({"é": "😀", "n": [1, 2, {"x": None}]}),
    json_blob({"a": 1}, level=1),  # non-default compression: kept verbatim
    json_blob([1, 2]),  # not a dict
    json_blob({}),
    json_blob({"_path": "/", "_domain": None}),
    json_blob({"pad": "x" * 600}),
    pickle_blob({"user": "bob"}),
    pickle_blob({}),
    pickle_blob({"_path": "/"}),
    pickle_blob([1]),
    base64.b64encode(b"\x01" * 40).decode("ascii"),  # encrypted-looking
    "not base64!",
    "QQ==",
    "",
    base64.b64encode(zlib.compress(b' {"a": 1}')).decode("ascii"),  # JSON, but not starting with {
    json_blob({"a": float("nan")}),
    base64.b64encode(zlib.compress('{"é": 1}'.encode())).decode("ascii"),
]


@pytest.mark.parametrize("blob", [*BLOBS, _junk_after_stream(), _non_canonical_base64(), _truncated()])
def test_stored_form_is_the_rewrap_rule_without_compressing_again(blob: str) -> None:
    assert encode_session(blob) == _rewrap_rule(blob)


def test_a_foreign_stream_with_the_default_header_is_stored_as_its_json() -> None:
    """The one case the fast rule reads differently: a zlib stream zlib.compress would not make but
    with its header (another strategy or deflate library). Its JSON text is stored; Beaker reads the
    same dict back, only the compressed bytes differ."""
    blob = _filtered()
    text = encode_session(blob)
    assert _rewrap_rule(blob) == blob and text == FOREIGN_TEXT
    back = decode_session_row(text, "sid")[0]
    assert util.JsonSerializer().loads(base64.b64decode(back)) == json.loads(text)


@pytest.mark.parametrize("blob", BLOBS)
def test_one_decoding_serves_every_use(blob: str) -> None:
    decoded = decode_blob_text(blob)
    assert (None if decoded is None else decoded[:2]) == decode_blob(blob)
    json_text = None if decoded is None else decoded[2]
    assert encode_decoded_session(blob, json_text) == encode_session(blob)
    emptied = decoded is not None and is_emptied_dict(blob, decoded[1])
    assert emptied == is_emptied_session(blob)
    if json_text is not None:
        assert decoded is not None and decoded[0] == BlobFormat.JSON
        assert json.loads(json_text) == decoded[1]


@pytest.mark.parametrize(
    "text",
    ["", "{}", '{"a": "é😀"}', json.dumps({"x": "y" * 200_000}), "x" * 65_535, "y" * 65_536, "z" * 131_071],
)
def test_uncompressed_wrap_reads_back_as_the_same_text(text: str) -> None:
    blob = _wrap_json_stored(text)
    raw = base64.b64decode(blob, validate=True)
    inflater = zlib.decompressobj()
    assert inflater.decompress(raw).decode("utf-8") == text
    assert inflater.eof and not inflater.unused_data  # one complete stream, adler32 checked


def test_beaker_reads_the_row_handed_to_it_as_the_stored_dict() -> None:
    data = {"_accessed_time": 1.5, "user": "bob", "n": [1, 2], "é": "😀"}
    text = encode_session(json_blob(data))
    blob, parsed = decode_session_row(text, "sid")
    assert parsed == data
    assert util.JsonSerializer().loads(base64.b64decode(blob)) == data
    # the public function still gives back Beaker's exact blob
    assert decode_session(text) == json_blob(data)
    assert decode_session_row(text, "sid", exact=True)[0] == json_blob(data)


def test_row_decoding_refuses_the_same_garbage() -> None:
    for text in ('{"a": ', "[1]", "{not json}", "", "##"):
        with pytest.raises(CorruptSessionError):
            decode_session_row(text, "sid")
    assert decode_session_row(pickle_blob({"a": 1}), "sid") == (pickle_blob({"a": 1}), None)


def _slow_utf16_length(text: str) -> int:
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


@pytest.mark.parametrize("text", ["", "a", "abc def", "é", "😀", "a😀b😀", "\ud800", "x" * 300])
def test_utf16_length_counts_code_units(text: str) -> None:
    assert _utf16_length(text) == _slow_utf16_length(text)


@pytest.mark.parametrize(
    ("sid", "valid"),
    [
        ("a", True),
        ("0123456789abcdef" * 2, True),
        ("x" * 255, True),
        ("x" * 256, False),
        ("😀" * 127, True),  # 254 code units
        ("😀" * 128, False),  # 256 code units
        ("a b", True),
        ("abc ", False),
        (" ", False),
        ("", False),
        ("a\x00b", False),
        ("a\tb", False),
        ("a\x7fb", False),
        ("a\x1fb", False),
        ("é", True),
        ("é\x85", True),  # a C1 character is not in CONTROL_CHARS (0x00-0x1f, 0x7f)
        ("a\ud800", False),
        ("~!@#$%^&*()_+{}|:<>?`-=[];',./\"", True),
    ],
)
def test_validate_sid_fast_path_agrees_with_the_rules(sid: str, valid: bool) -> None:
    if valid:
        assert validate_sid(sid) is sid
    else:
        with pytest.raises(InvalidSessionId):
            validate_sid(sid)


def test_validate_sid_refuses_non_str() -> None:
    class Sub(str):
        pass

    assert validate_sid(Sub("abc")) == "abc"  # a str subclass takes the general path, same rules
    for value in (b"abc", 1, None):
        with pytest.raises(InvalidSessionId):
            validate_sid(value)


def test_a_new_large_session_crosses_the_wire_once(standin, make_store) -> None:  # type: ignore[no-untyped-def]
    """The insert/revive batch carries the data in one variable, so a 200,000-character session costs
    about 400 kB (UTF-16) on the wire, not twice that; the revive of an expired row reads it too."""
    store = make_store()
    assert store.get("warm-up") is None  # logged in: the counts below are the saves' own
    data = json.dumps({"big": "é" * 100_000 + "x" * 100_000}, ensure_ascii=False)
    for sid in ("new-big", "new-big-2"):
        before = standin.stats()["bytes_in"]
        assert store.save(sid, data) == "saved"
        sent = standin.stats()["bytes_in"] - before
        assert 2 * len(data) <= sent < 2 * len(data) + 4_000, sent
        assert store.get(sid) == data
    standin.clock.advance(store.settings.ttl + 1)  # both rows expire; a save revives one in place
    assert store.get("new-big") is None
    assert store.save("new-big", data + " ") == "saved"
    assert store.get("new-big") == data + " "


def test_a_large_cache_value_crosses_the_wire_once(standin, make_store) -> None:  # type: ignore[no-untyped-def]
    """store.set (the cache upsert: UPDATE, and INSERT if no row) carries the value in one variable.

    Before, the batch named %(data)s in both the UPDATE and the INSERT, and pymssql writes parameters
    into the batch text: a 100,000-character value went over the wire twice. The old shape is sent
    here too, on the same server, to show the difference in request bytes.
    """
    store = make_store()
    assert store.get("warm-up") is None  # logged in: the counts below are the statements' own
    value = "é" * 50_000 + "x" * 49_998 + "''"  # 100,000 characters, quotes escaped on the way
    utf16 = 2 * len(value)
    for sid in ("cache-new", "cache-new"):  # first the INSERT path, then the UPDATE path
        before = standin.stats()["bytes_in"]
        store.set(sid, value, ttl=600)
        sent = standin.stats()["bytes_in"] - before
        assert utf16 <= sent < 1.5 * utf16, sent  # one copy of the value, not two
        assert store.get(sid) == value
    assert store.length() == 1

    # The old statement, for comparison (not something the package sends any more).
    table = store.settings.table.quoted
    exact = "[sid] = %(sid)s AND [sid] = %(sid)s COLLATE Latin1_General_BIN2"
    expires = "DATEADD(second, %(ttl)s, GETUTCDATE())"
    old = (
        f"UPDATE {table} SET [session] = %(data)s, [expires] = {expires} WHERE {exact};\n"
        "IF @@ROWCOUNT = 0\n"
        f"    INSERT INTO {table} ([sid], [session], [expires]) VALUES (%(sid)s, %(data)s, {expires});"
    )
    with standin.connect(autocommit=True) as conn:
        before = standin.stats()["bytes_in"]
        conn.cursor().execute(old, {"sid": "cache-old", "data": value, "ttl": 600})
        old_sent = standin.stats()["bytes_in"] - before
    assert old_sent >= 2 * utf16, old_sent  # pymssql inlined the value twice
    assert store.get("cache-old") == value
    print(f"100,000-character value: {sent} request bytes now, {old_sent} with the old statement")
