"""Options -> Settings: coercion of ini strings, URL parsing, validation messages, masking."""

from __future__ import annotations

import logging

import pytest

from beaker_mssql import ConfigurationError
from beaker_mssql.config import Settings, TableName, parse_settings, parse_table_name, parse_url


def test_defaults():
    s = parse_settings({})
    assert s.table == TableName("dbo", "sessions")
    assert s.table.quoted == "[dbo].[sessions]"
    assert s.ttl == 86400 and s.explicit_ttl is None
    assert s.use_utc is True
    assert s.serializer == "pickle"
    assert (s.create_table, s.auto_remove) == (False, False)
    assert s.auto_remove_interval == 900 and s.auto_remove_batch_size == 1000
    pool = (s.retries, s.pool_size, s.pool_max_overflow, s.pool_recycle, s.pool_timeout)
    assert pool == (1, 5, 10, 3600, 30)


def test_ini_strings_are_coerced():
    s = parse_settings(
        {
            "server": "db.example",
            "port": "1433",
            "user": "app",
            "password": "pw",
            "database": "web",
            "use_utc": "no",
            "create_table": "on",
            "auto_remove": "1",
            "auto_remove_interval": "60.5",
            "auto_remove_batch_size": "500",
            "retries": "3",
            "pool_size": "2",
            "pool_max_overflow": "0",
            "pool_recycle": "-1",
            "pool_timeout": "2.5",
            "ttl": "120",
            "login_timeout": "5",
            "query_timeout": "7",
        }
    )
    assert s.connection.port == 1433 and s.connection.database == "web"
    assert s.use_utc is False and s.create_table is True and s.auto_remove is True
    assert s.auto_remove_interval == 60.5 and s.auto_remove_batch_size == 500
    assert (s.retries, s.pool_size, s.pool_max_overflow, s.pool_recycle, s.pool_timeout) == (3, 2, 0, -1, 2.5)
    assert s.ttl == 120 and s.connection.login_timeout == 5 and s.connection.query_timeout == 7


@pytest.mark.parametrize("text,expected", [
    ("true", True), ("Yes", True), ("ON", True), ("1", True),
    ("false", False), ("no", False), ("off", False), ("0", False),
])
def test_booleans(text, expected):
    assert parse_settings({"use_utc": text}).use_utc is expected


@pytest.mark.parametrize("key,value", [
    ("use_utc", "maybe"), ("retries", "-1"), ("retries", "x"), ("pool_size", "0"),
    ("pool_timeout", "0"), ("auto_remove_interval", "-5"), ("ttl", "0"), ("ttl", "1.5"),
    ("pool_recycle", "0"), ("port", "70000"), ("auto_remove_batch_size", "0"), ("tds_version", "9.9"),
    ("encrypt", "sometimes"),
])
def test_bad_values_name_key_and_value(key, value):
    with pytest.raises(ConfigurationError) as info:
        parse_settings({key: value})
    assert key in str(info.value)
    assert value in str(info.value)
    assert isinstance(info.value, ValueError)


def test_ttl_precedence():
    assert parse_settings({"timeout": 1920}).ttl == 1920  # Beaker's forwarded timeout
    assert parse_settings({"timeout": "1920", "ttl": "60"}).ttl == 60  # explicit ttl wins
    assert parse_settings({"ttl": 60}).explicit_ttl == 60
    assert parse_settings({"timeout": 1920}).explicit_ttl is None


def test_url_full():
    s = parse_settings({
        "url": "mssql://us%40er:p%40ss%3Aword@db.example:1444/my%20db?encrypt=require"
               "&trust_server_certificate=yes&login_timeout=4&timeout=9&appname=web&tds_version=7.4"
    })
    c = s.connection
    assert (c.user, c.password, c.server) == ("us@er", "p@ss:word", "db.example")
    assert (c.port, c.database) == (1444, "my db")
    assert c.encrypt == "require" and c.trust_server_certificate is True
    assert c.login_timeout == 4 and c.query_timeout == 9  # `timeout` in the URL is the query timeout
    assert c.appname == "web" and c.tds_version == "7.4"


@pytest.mark.parametrize("url", ["mssql://u:p@host%5Cinstance/db", "mssql://u:p@host\\instance/db"])
def test_url_instance_names(url):
    c = parse_settings({"url": url}).connection
    assert c.server == "host\\instance" and c.port is None
    kwargs = c.connect_kwargs()
    assert kwargs["server"] == "host\\instance" and "port" not in kwargs


def test_separate_keys_override_url():
    s = parse_settings({"url": "mssql://u:p@h:1/db", "database": "other", "query_timeout": "3"})
    assert s.connection.database == "other" and s.connection.query_timeout == 3


def test_timeout_key_is_beakers_not_query_timeout():
    s = parse_settings({"timeout": "600"})
    assert s.connection.query_timeout == 30 and s.ttl == 600


def test_connect_kwargs_autocommit():
    kwargs = parse_settings({"url": "mssql://u:p@h:1433/db"}).connection.connect_kwargs()
    assert kwargs["autocommit"] is True and kwargs["port"] == "1433" and kwargs["server"] == "h"


@pytest.mark.parametrize("url", [
    "postgres://u:secret@h/db",
    "u:secret@h/db",  # no scheme at all
    "postgres://u:sec@ret@h/db",  # an unencoded @ in the password
    "mssql://u:sec?ret@h/db",  # an unencoded ? in the password: the rest looks like a query
    "mssql://u:sec?r=et@h/db",
])
def test_bad_url_never_shows_the_password(url):
    with pytest.raises(ConfigurationError) as info:
        parse_settings({"url": url})
    assert "ret" not in str(info.value)


def test_bad_url():
    with pytest.raises(ConfigurationError, match="bogus") as info:
        parse_url("mssql://h/db?bogus=1")
    assert "tds_version" in str(info.value)  # says what is supported


@pytest.mark.parametrize("text,schema,name", [
    ("sessions", "dbo", "sessions"),
    ("dbo.sessions", "dbo", "sessions"),
    ("[dbo].[sessions]", "dbo", "sessions"),
    ("app.web_sessions", "app", "web_sessions"),
    ("[my schema].[odd]]name]", "my schema", "odd]name"),
])
def test_table_names(text, schema, name):
    t = parse_table_name(text)
    assert (t.schema, t.name) == (schema, name)


def test_table_quoting_doubles_brackets():
    assert parse_table_name("[s].[a]]b]").quoted == "[s].[a]]b]"


@pytest.mark.parametrize("text", ["a;drop", "x]--", "a.b.c", "[a].[b].[c]", "", "[unclosed", "a b",
                                  "[" + "x" * 129 + "]", "[a\x01]", "[a]x"])
def test_bad_table_names(text):
    with pytest.raises(ConfigurationError) as info:
        parse_table_name(text)
    assert "table" in str(info.value)


def test_password_masked_in_repr_and_errors():
    s = parse_settings({"url": "mssql://sa:Sup3rS3cret@h/db"})
    assert "Sup3rS3cret" not in repr(s) and "***" in repr(s)
    assert "Sup3rS3cret" not in repr(s.connection) and "Sup3rS3cret" not in s.connection.describe()
    with pytest.raises(ConfigurationError) as info:
        parse_settings({"password": object()})
    assert "***" in str(info.value)


def test_settings_frozen_and_hashable():
    a = parse_settings({"url": "mssql://u:p@h/db", "ttl": "5"})
    b = parse_settings({"url": "mssql://u:p@h/db", "ttl": 5})
    assert a == b and hash(a) == hash(b)
    assert {a: 1}[b] == 1
    with pytest.raises(Exception):
        a.ttl = 3  # type: ignore[misc]
    assert isinstance(a, Settings)


def test_beaker_keys_ignored_unknown_warned(caplog):
    caplog.set_level(logging.WARNING, logger="beaker_mssql")
    parse_settings({"data_dir": "/tmp/x", "digest_filenames": False, "lock_dir": None, "timeout": 5,
                    "key_length": 250, "enabled": True, "expire": 10})
    assert not caplog.records
    parse_settings({"frobnicate": "1"})
    assert any("frobnicate" in r.getMessage() for r in caplog.records)


def test_serializers():
    assert parse_settings({"serializer": "json"}).serializer == "json"
    custom = parse_settings({"serializer": "beaker.util.JsonSerializer"}).serializer
    assert hasattr(custom, "dumps") and hasattr(custom, "loads")
    assert parse_settings({"serializer": "beaker.util.JsonSerializer"}) == parse_settings(
        {"serializer": "beaker.util.JsonSerializer"})
    with pytest.raises(ConfigurationError, match="serializer"):
        parse_settings({"serializer": "os.path"})
    with pytest.raises(ConfigurationError, match="no.such.module"):
        parse_settings({"serializer": "no.such.module.thing"})


def hook(*args):
    return None


def test_callables_by_dotted_path():
    import os.path

    s = parse_settings({"on_error": "os.path.join", "pre_remove_callback": hook,
                        "auto_remove_callback": "os.path:basename"})
    assert s.on_error is os.path.join and s.pre_remove_callback is hook
    assert s.auto_remove_callback is os.path.basename
    with pytest.raises(ConfigurationError, match="on_connect"):
        parse_settings({"on_connect": "os.path.nothing_here"})
    with pytest.raises(ConfigurationError, match="on_connect"):
        parse_settings({"on_connect": 42})


def test_encrypt_values():
    assert parse_settings({"encrypt": "true"}).connection.encrypt == "require"
    assert parse_settings({"encrypt": "no"}).connection.encrypt == "off"
    assert parse_settings({"encrypt": "request"}).connection.encrypt == "request"
    assert parse_settings({}).connection.encrypt is None


def test_unknown_serializer_name_lists_the_choices():
    from beaker_mssql.config import ConfigurationError, parse_settings

    with pytest.raises(ConfigurationError) as info:
        parse_settings({"url": "mssql://u:p@h/db", "serializer": "yaml"})
    message = str(info.value)
    assert "'pickle', 'json'" in message and "'yaml'" in message


def test_ca_file_is_checked_and_named(tmp_path):
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = parse_settings({"url": f"mssql://u:p@h/db?driver=pytds&encrypt=require&ca_file={pem}"})
    assert settings.connection.ca_file == str(pem) and str(pem) in repr(settings.connection)
    with pytest.raises(ConfigurationError, match=r"ca_file = '/no/such\.pem' is not a readable file"):
        parse_settings({"url": "mssql://u:p@h/db", "driver": "pytds", "ca_file": "/no/such.pem"})
    with pytest.raises(ConfigurationError, match="ca_file .* needs driver = pytds.*freetds.conf"):
        parse_settings({"url": "mssql://u:p@h/db", "driver": "pymssql", "ca_file": str(pem)})
    with pytest.raises(ConfigurationError, match="encrypt is off"):
        parse_settings({"url": "mssql://u:p@h/db", "driver": "pytds", "ca_file": str(pem), "encrypt": "off"})
