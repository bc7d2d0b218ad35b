"""The embedded T-SQL engine of the SQL Server stand-in.

``Engine`` holds the databases, the lock manager and the parse cache; ``EngineSession`` (one per TDS
connection) runs batches. See beaker_mssql/testing/README.md for the supported T-SQL subset.
"""

from __future__ import annotations

import itertools
import threading
from typing import Optional, Protocol

from ..clock import Clock
from ..profiles import SQLSERVER, Profile
from ..results import SQLError
from .ast import Batch
from .fairlock import FairLock
from .lexer import LiteralValue
from .locks import LockManager
from .persist import load_file, save_file
from .run_base import Cancelled
from .session import EngineSession
from .storage import Database

__all__ = ["Cancelled", "Engine", "EngineHooks", "EngineSession"]


class EngineHooks(Protocol):
    def before_statement(self, session: EngineSession, sql_text: str) -> None:
        """Called once per statement about to run; raising SQLError makes that statement fail with it."""


class Engine:
    """An in-process SQL Server stand-in engine: databases 'master' and the configured one."""

    def __init__(
        self,
        clock: Clock,
        database: str = "test",
        data_file: Optional[str] = None,
        hooks: Optional[EngineHooks] = None,
        profile: Profile = SQLSERVER,
    ) -> None:
        self.clock = clock
        self.profile = profile  # which engine to behave like (testing/profiles.py)
        self.database = database
        self.data_file = data_file
        self.hooks = hooks
        # The engine mutex (first come, first served: see fairlock.py), and a condition on it for lock
        # waits. Hot paths enter ``mutex`` directly: the same lock, without Condition's Python-level
        # __enter__/__exit__ (twice per statement).
        self.mutex = FairLock()
        self.cond = threading.Condition(self.mutex)  # type: ignore[arg-type]  # any acquire/release lock works
        self.locks = LockManager()
        self.databases: dict[str, Database] = {"master": Database("master")}
        if database.upper() != "MASTER":
            self.databases[database] = Database(database)
        self.schema_version = 0
        self.parse_cache: dict[str, tuple[Batch, list[tuple[int, LiteralValue]]]] = {}
        self.sessions: dict[int, EngineSession] = {}
        self._spids = itertools.count(51)
        self._object_n = 0
        self.next_object_base = 901578250
        self.dirty = False
        if data_file is not None:
            load_file(self, data_file)

    def new_object_id(self) -> int:
        """Stable, SQL Server-looking object ids (persisted with the data file)."""
        self._object_n += 1
        return self.next_object_base + (self._object_n * 16000057) % 1000000007

    def object_counter_state(self) -> int:
        return self._object_n

    def restore_object_counter(self, n: int) -> None:
        self._object_n = max(self._object_n, n)

    def database_named(self, name: Optional[str]) -> Optional[Database]:
        if name is None:
            return None
        for k, db in self.databases.items():
            if k.upper() == name.upper():
                return db
        return None

    def connect(self, database: Optional[str] = None, login: str = "sa") -> EngineSession:
        name = database or self.database
        db = self.database_named(name)
        if db is None:
            if self.profile.missing_database_error == 911:
                # SQL Server's text for 911; the number is what Babelfish sends at login (profiles.py).
                text = f"Database '{name}' does not exist. Make sure that the name is entered correctly."
                raise SQLError(911, text, 16, 1)
            raise SQLError(
                4060, f'Cannot open database "{name}" requested by the login. The login failed.', 11, 1
            )
        with self.cond:
            spid = next(self._spids)
            s = EngineSession(self, spid, db.name, login)
            self.sessions[spid] = s
        return s

    def after_batch(self) -> None:
        """Persist committed changes when no session has uncommitted ones (so the file never holds them)."""
        if self.data_file is None or not self.dirty:
            return
        with self.cond:
            if not self.dirty or any(s.undo for s in self.sessions.values()):
                return
            save_file(self, self.data_file)
            self.dirty = False

    def close(self) -> None:
        for s in list(self.sessions.values()):
            s.close()
        if self.data_file is not None:
            with self.cond:
                save_file(self, self.data_file)
                self.dirty = False
