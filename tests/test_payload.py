"""Session blobs <-> column text; cache serializers. Pure functions, no server needed."""

from __future__ import annotations

import base64
import json
import logging
import pickle
import zlib

import pytest
from beaker import util

from beaker_mssql import CorruptSessionError, SerializationError
from beaker_mssql.payload import CacheSerializer, decode_session, encode_session


def beaker_json_blob(d):
    return base64.b64encode(util.JsonSerializer().dumps(d)).decode("ascii")


def beaker_pickle_blob(d):
    return base64.b64encode(util.PickleSerializer().dumps(d)).decode("ascii")


def test_json_blob_is_stored_as_plain_json_and_restored_exactly():
    blob = beaker_json_blob({"user": "bob", "_accessed_time": 1.5, "n": [1, 2]})
    text = encode_session(blob)
    assert text.startswith("{") and json.loads(text)["user"] == "bob"
    assert decode_session(text) == blob


def test_pickle_blob_is_stored_unchanged():
    blob = beaker_pickle_blob({"user": "bob"})
    assert encode_session(blob) == blob
    assert decode_session(blob) == blob


def test_encrypted_looking_blob_is_stored_unchanged():
    nonce = base64.b64encode(b"\x01" * 16).decode()[:24]
    blob = nonce + beaker_json_blob({"a": 1})
    assert encode_session(blob) == blob
    assert decode_session(blob) == blob


def test_non_default_compression_is_kept_verbatim():
    blob = base64.b64encode(zlib.compress(b'{"a": 1}', 1)).decode()
    assert encode_session(blob) == blob  # re-wrapping would not give the same bytes


def test_json_array_is_not_unwrapped():
    blob = base64.b64encode(zlib.compress(b"[1, 2]")).decode()
    assert encode_session(blob) == blob


def test_connect_mssql_shaped_row_loads():
    row = ('{"cookie":{"originalMaxAge":86400000,"expires":"2026-12-01T00:00:00.000Z","httpOnly":true,'
           '"path":"/"},"user":"bob"}')
    blob = decode_session(row)
    assert util.JsonSerializer().loads(base64.b64decode(blob))["user"] == "bob"


@pytest.mark.parametrize("row", ["{not json", "{}}", "", "***", "abc def", "\x00"])
def test_corrupt_rows(row, caplog):
    caplog.set_level(logging.WARNING, logger="beaker_mssql.security")
    with pytest.raises(CorruptSessionError) as info:
        decode_session(row, "0123456789abcdef")
    assert isinstance(info.value, ValueError)
    assert not isinstance(info.value, (KeyError, TypeError))  # Beaker would swallow those silently
    assert any(r.name == "beaker_mssql.security" for r in caplog.records)
    assert "0123456789abcdef" not in caplog.text  # ids are shortened in logs


def test_cache_pickle_roundtrip():
    s = CacheSerializer("pickle")
    value = (1.0, None, {"x": b"\x00\xff", "y": {1, 2}})
    text = s.dumps(value)
    assert isinstance(text, str) and text.isascii()
    assert s.loads(text) == value


def test_cache_json_is_plain_json():
    s = CacheSerializer("json")
    text = s.dumps([1.0, 60, {"a": "é"}])
    assert json.loads(text) == [1.0, 60, {"a": "é"}]
    assert s.loads(text) == [1.0, 60, {"a": "é"}]


def test_cache_custom_serializer_bytes():
    s = CacheSerializer(util.JsonSerializer())
    text = s.dumps({"a": 1})
    assert s.loads(text) == {"a": 1}


def test_unencodable_value_names_the_key():
    with pytest.raises(SerializationError, match="mykey"):
        CacheSerializer("json").dumps({"a": object()}, key="mykey")
    with pytest.raises(SerializationError, match="k2"):
        CacheSerializer("pickle").dumps(lambda: None, key="k2")


def test_corrupt_cache_rows():
    with pytest.raises(CorruptSessionError):
        CacheSerializer("pickle").loads("%%%", key="k")
    with pytest.raises(CorruptSessionError):
        CacheSerializer("pickle").loads(base64.b64encode(b"not a pickle").decode(), key="k")
    with pytest.raises(CorruptSessionError):
        CacheSerializer("json").loads("{", key="k")
    assert pickle.loads(base64.b64decode(CacheSerializer().dumps(3))) == 3


def _beaker_blob(data, serializer):
    from beaker.util import JsonSerializer, PickleSerializer

    raw = (JsonSerializer() if serializer == "json" else PickleSerializer()).dumps(data)
    return base64.b64encode(raw).decode("ascii")


@pytest.mark.parametrize("serializer", ["json", "pickle"])
def test_emptied_session_is_recognised(serializer):
    from beaker_mssql.payload import is_emptied_session

    assert is_emptied_session(_beaker_blob({}, serializer))
    assert is_emptied_session(_beaker_blob({"_domain": None, "_path": "/"}, serializer))
    # Anything the application stored, or Beaker's access times, keeps the row.
    assert not is_emptied_session(_beaker_blob({"_path": "/", "user": "bob"}, serializer))
    assert not is_emptied_session(_beaker_blob({"_accessed_time": 1.0, "_creation_time": 1.0}, serializer))
    assert not is_emptied_session(_beaker_blob({"_path": "/", "pad": "x" * 600}, serializer))


def test_emptied_session_never_matches_garbage_or_encrypted_text():
    from beaker_mssql.payload import is_emptied_session

    for blob in ["", "not base64!", "QUJD", base64.b64encode(b"\x80\x02garbage").decode(), "{}"]:
        assert not is_emptied_session(blob)
