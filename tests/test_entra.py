"""Microsoft Entra ID sign-in with driver = pytds: the access_token option, the stand-in's LOGIN7 FEDAUTH
([MS-TDS] 2.2.6.4) with test tokens, refusal of wrong and expired tokens (18456), and token refresh on a
long-lived pool driven by a token clock (never a sleep)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytds
import pytest
from helpers import new_sid

from beaker_mssql import MSSQLStore, drivers
from beaker_mssql.config import parse_settings
from beaker_mssql.errors import ConfigurationError, ConnectionFailedError


@dataclass
class AccessToken:
    """Shaped like azure.core.credentials.AccessToken."""

    token: str
    expires_on: int


class TokenIssuer:
    """An access_token callable: asks the stand-in for a token valid ``lifetime`` seconds of stand-in time,
    and reports its expiry on its own token clock (``now``), which the test advances."""

    def __init__(self, server: Any, lifetime: int = 3600) -> None:
        self.server = server
        self.lifetime = lifetime
        self.now = 1_000_000.0
        self.issued: list[str] = []

    def __call__(self) -> AccessToken:
        token = self.server.issue_token("app@contoso.onmicrosoft.com", self.lifetime)
        self.issued.append(token)
        return AccessToken(token, int(self.now) + self.lifetime)

    def clock(self) -> float:
        return self.now

    def __hash__(self) -> int:
        return id(self)


def token_url(server: Any) -> str:
    """The stand-in's URL without user and password: the token is the credential."""
    return f"mssql://{server.host}:{server.port}/{server.database}"


def test_access_token_needs_pytds_and_no_password():
    with pytest.raises(ConfigurationError, match=r"driver = pytds.*#915"):
        parse_settings({"url": "mssql://h/db", "driver": "pymssql", "access_token": "os.getcwd"})
    with pytest.raises(ConfigurationError, match="user and password"):
        parse_settings({"url": "mssql://u:p@h/db", "driver": "pytds", "access_token": "os.getcwd"})
    with pytest.raises(ConfigurationError, match="driver must be 'pymssql' or 'pytds', got 'odbc'"):
        parse_settings({"url": "mssql://h/db", "driver": "odbc"})
    with pytest.raises(ConfigurationError, match="access_token"):
        parse_settings({"url": "mssql://h/db", "driver": "pytds", "access_token": "no.such.module.fn"})
    settings = parse_settings({"url": "mssql://h/db?driver=pytds", "access_token": "azure-default"})
    assert settings.connection.driver == "pytds" and settings.connection.access_token == "azure-default"


def test_azure_identity_missing_is_a_clear_error():
    try:
        import azure.identity  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigurationError, match=r"beaker-mssql\[azure\]"):
            drivers.token_source("managed-identity").token()
    else:
        pytest.skip("azure-identity is installed here: the missing-extra message cannot be shown")


def test_entra_login_with_a_test_token(standin, mssql_table):
    issuer = TokenIssuer(standin)
    store = MSSQLStore(url=token_url(standin), table=mssql_table, driver="pytds", access_token=issuer)
    try:
        sid = new_sid()
        store.set(sid, "payload", ttl=60)
        assert store.get(sid) == "payload"
        users = {c["user"] for c in standin.stats()["per_connection"].values()}
        assert "app@contoso.onmicrosoft.com" in users
        assert "token" not in repr(store.settings) and issuer.issued[0] not in repr(store.settings)
    finally:
        store.close()


def test_wrong_token_is_refused_with_18456_and_not_retried(standin, mssql_table):
    def wrong() -> str:
        return "not-a-token-the-server-issued"

    store = MSSQLStore(url=token_url(standin), table=mssql_table, driver="pytds", access_token=wrong,
                       retries=3)
    try:
        with pytest.raises(ConnectionFailedError) as info:
            store.get(new_sid())
        assert info.value.number == 18456
        assert "not-a-token" not in str(info.value)
        assert standin.stats()["login_failures"] == 1  # a refused credential is never retried
    finally:
        store.close()


def test_expired_token_is_refused(standin):
    token = standin.issue_token("app@contoso.onmicrosoft.com", lifetime=60)
    conn = pytds.connect(dsn=standin.host, port=standin.port, database=standin.database,
                         access_token_callable=lambda: token, autocommit=True)
    conn.close()
    standin.clock.advance(61)
    with pytest.raises(pytds.OperationalError) as info:
        pytds.connect(dsn=standin.host, port=standin.port, database=standin.database,
                      access_token_callable=lambda: token, autocommit=True)
    assert info.value.number == 18456
    assert "<token-identified principal>" in str(info.value)


def test_long_lived_pool_refreshes_its_token_and_replaces_the_connection(standin, mssql_table):
    issuer = TokenIssuer(standin, lifetime=3600)
    drivers.token_source(issuer).clock = issuer.clock  # the token clock the test advances
    store = MSSQLStore(url=token_url(standin), table=mssql_table, driver="pytds", access_token=issuer)
    try:
        sid = new_sid()
        store.set(sid, "v1", ttl=86400)
        assert store.get(sid) == "v1"
        assert len(issuer.issued) == 1 and standin.stats()["logins"] == 1
        # Half-way through the token's life: the pooled connection and the token are reused.
        issuer.now += 1800
        assert store.get(sid) == "v1"
        assert len(issuer.issued) == 1 and standin.stats()["logins"] == 1
        # Past the refresh margin: a new token is fetched and the connection logged in with the old one is
        # replaced before the server could find its token expired.
        issuer.now += 1790
        standin.clock.advance(3590)
        store.set(sid, "v2", ttl=86400)
        assert store.get(sid) == "v2"
        assert len(issuer.issued) == 2
        assert standin.stats()["logins"] == 2
        assert store.pool.stats()["recycled"] == 1
        # The first token has expired on the server now; the pool only uses the second.
        standin.clock.advance(20)
        assert standin._check_token(issuer.issued[0]) is None
        assert store.get(sid) == "v2"
    finally:
        store.close()
