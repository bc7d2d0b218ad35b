"""Babelfish 4.3 behaviours read from its documentation and source, not measured (docs/engines.md).

Each fact is checked under every profile whatever profile the run uses: the engine-level tests build an
``Engine`` per profile, the store-level test starts one stand-in per profile. A profile that stopped
modelling a fact fails here; so does the package if its code stopped coping with it.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_tools import one_standin_per_profile
from helpers import wait_until

from beaker_mssql import MSSQLStore
from beaker_mssql.config import TableName
from beaker_mssql.sql import applock_resource, create_lock_resource
from beaker_mssql.testing import SQLServerStandIn
from beaker_mssql.testing.clock import Clock
from beaker_mssql.testing.engine import Engine, EngineSession
from beaker_mssql.testing.profiles import (
    BABELFISH,
    BABELFISH_4_3_COMMIT,
    PROFILES,
    Profile,
    babelfish_index_name,
    detect_profile,
)
from beaker_mssql.testing.results import Message, ResultSet

NAMES = sorted(PROFILES)


def rows(events: list[Any]) -> list[tuple[Any, ...]]:
    errors = [e for e in events if isinstance(e, Message) and e.is_error]
    assert errors == []
    return [tuple(r) for e in events if isinstance(e, ResultSet) for r in e.rows]


@pytest.fixture(params=NAMES)
def profile(request: pytest.FixtureRequest) -> Profile:
    return PROFILES[request.param]


@pytest.fixture
def engine(profile: Profile) -> Engine:
    return Engine(Clock(), profile=profile)


def getapplock(resource: str, timeout: int) -> str:
    literal = "N'" + resource.replace("'", "''") + "'"
    return (f"DECLARE @r int; EXEC @r = sp_getapplock @Resource = {literal}, @LockMode = N'Exclusive', "
            f"@LockOwner = N'Session', @LockTimeout = {timeout}; SELECT @r")


# -- sp_getapplock (babelfish_extensions contrib/babelfishpg_tsql/src/applock.c) -------------------------


def test_applock_granted_after_waiting_returns_1_or_babelfish_0(engine: Engine, profile: Profile) -> None:
    holder, waiter = engine.connect(), engine.connect()
    assert rows(holder.execute(getapplock("wait-here", 0))) == [(0,)]
    got: list[list[tuple[Any, ...]]] = []
    thread = threading.Thread(target=lambda: got.append(rows(waiter.execute(getapplock("wait-here", 30000)))))
    thread.start()
    try:
        assert wait_until(lambda: waiter.session_id in engine.locks.waits, timeout=30)
    finally:
        holder.execute("EXEC sp_releaseapplock @Resource = N'wait-here', @LockOwner = N'Session'")
        thread.join(30)
    assert got == [[(0,)]] if profile is BABELFISH else [[(1,)]]


def test_applock_resource_kept_to_255_characters_or_babelfish_255_bytes(
    engine: Engine, profile: Profile
) -> None:
    # 129 characters each, distinct within SQL Server's 255 characters; 257 UTF-8 bytes, so Babelfish's
    # first 255 bytes (127 x e-acute) are the same for both.
    first, second = "\u00e9" * 128 + "1", "\u00e9" * 128 + "2"
    a, b = engine.connect(), engine.connect()
    assert rows(a.execute(getapplock(first, 0))) == [(0,)]
    got = rows(b.execute(getapplock(second, 0)))
    assert got == [(-999,)] if profile is BABELFISH else [(0,)]  # Babelfish: one lock, held by a


def test_lock_resources_fit_every_engine() -> None:
    """sql.applock_resource: within 255 UTF-8 bytes, distinct, and ASCII names as before."""
    long_names = ["\u00e9" * 128 + "1", "\u00e9" * 128 + "2", "\u4e2d" * 90 + "x", "\u4e2d" * 90 + "y"]
    resources = [applock_resource(n) for n in long_names]
    assert len(set(resources)) == len(resources)
    assert all(len(r.encode("utf-8")) <= 255 for r in resources)
    assert applock_resource("beaker_mssql:dbo.sessions:save:abc") == "beaker_mssql:dbo.sessions:save:abc"
    ascii_long = "beaker_mssql:dbo.sessions:" + "n" * 300
    assert applock_resource(ascii_long) == (
        ascii_long[:180] + "~" + hashlib.sha256(ascii_long.encode("utf-8")).hexdigest()
    )
    table = TableName("dbo", "\u00e9" * 120)
    assert len(create_lock_resource(table).encode("utf-8")) <= 255


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, SQLServerStandIn]]:
    with one_standin_per_profile() as started:
        yield started


@pytest.mark.standin_only
@pytest.mark.parametrize("name", NAMES)
def test_store_locks_with_long_non_ascii_names_stay_apart(
    servers: dict[str, SQLServerStandIn], name: str
) -> None:
    """Two lock names that share their first 255 UTF-8 bytes are two locks on every engine."""
    server = servers[name]
    table = TableName("dbo", "l_" + uuid.uuid4().hex[:10])
    first, second = "\u00e9" * 120 + "-first", "\u00e9" * 120 + "-second"
    with MSSQLStore(url=server.url, table=table.quoted) as a, \
            MSSQLStore(url=server.url, table=table.quoted) as b:
        held = a.acquire_applock(first)
        assert held is not None
        got: list[Any] = []

        def other_thread() -> None:
            lock = b.acquire_applock(second, timeout_ms=0)
            got.append(lock)
            same = b.acquire_applock(first, timeout_ms=0)  # the held name is still one lock
            got.append(same)
            if lock is not None:
                lock.release()

        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join(60)
        held.release()
    assert len(got) == 2 and got[0] is not None and got[1] is None


# -- HASHBYTES over nvarchar (string.c: the argument's stored bytes; nvarchar is UTF-8 there) ---------------


def test_hashbytes_of_nvarchar_hashes_utf16_or_babelfish_utf8(engine: Engine, profile: Profile) -> None:
    session: EngineSession = engine.connect()
    got = rows(session.execute("SELECT HASHBYTES('SHA2_256', N'h\u00e9llo'), HASHBYTES('SHA2_256', 'abc')"))
    encoding = "utf-8" if profile is BABELFISH else "utf-16-le"
    # varchar 'abc': the same on every engine; Babelfish's own expectation (test/JDBC/expected/BABEL-1329.out)
    abc = bytes.fromhex("BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD")
    assert got == [(hashlib.sha256("h\u00e9llo".encode(encoding)).digest(), abc)]


# -- recognising the engine (properties.c, BABEL-VERSION.out) -----------------------------------------------


def test_engine_edition_and_version_as_the_engine_reports_them(engine: Engine, profile: Profile) -> None:
    session = engine.connect()
    sql = "SELECT @@VERSION, CAST(SERVERPROPERTY('EngineEdition') AS int)"
    (version, edition), = rows(session.execute(sql))
    assert edition == {"sqlserver": 3, "azure": 5, "babelfish": 2}[profile.name]
    assert detect_profile(str(version), int(edition), profile.read_committed_snapshot) is profile


def test_detect_profile_on_babelfish_answers() -> None:
    """What Babelfish 4.3 answers: the @@VERSION first line of BABEL-VERSION.out, EngineEdition 2 (Standard),
    is_read_committed_snapshot_on 1 (ownership.sql)."""
    version = "Babelfish for PostgreSQL with SQL Server Compatibility - 12.0.2000.8\nSep 2 2024 ..."
    assert detect_profile(version, 2, True) is BABELFISH


def test_babelfish_index_name_is_cut_to_63_bytes() -> None:
    short = babelfish_index_name("IX_sessions_expires", "sessions")
    digest = hashlib.md5(b"ix_sessions_expires", usedforsecurity=False).hexdigest()
    assert short == "ix_sessions_expiressessions" + digest
    long = babelfish_index_name("IX_web_sessions_2024_expires", "web_sessions_2024")
    assert len(long.encode("utf-8")) == 63
    assert long.startswith("ix_web_sessions_2024_expiresweb_sessions_2024")
    wide = babelfish_index_name("IX_\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9_expires",
                                "\u00e9" * 10)
    assert len(wide.encode("utf-8")) <= 63 and "\ufffd" not in wide


def test_engines_page_cites_the_commit_the_profile_cites() -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "engines.md").read_text("utf-8")
    assert BABELFISH_4_3_COMMIT in page
    cited = [d for d in BABELFISH.deviations if BABELFISH_4_3_COMMIT in d.source]
    assert len(cited) >= 5  # the facts read from Babelfish's source, each with its file
