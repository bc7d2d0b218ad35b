"""Lock manager with SQL Server's lock modes and compatibility matrix, plus deadlock detection.

All methods are called with the engine mutex held. A request that cannot be granted raises
``LockConflict``; the caller releases the mutex, waits (polling cancel / LOCK_TIMEOUT), checks the
wait-for graph for a cycle, and restarts the statement from scratch.
"""

from __future__ import annotations

from typing import Any, Optional

# Durations: how long a granted lock is held.
STMT = 0  # released at the end of the statement
TXN = 1  # released at COMMIT/ROLLBACK (or end of statement in autocommit mode)
SESSION = 2  # sp_getapplock @LockOwner = 'Session': until released or disconnect

MODES = ("IS", "IX", "S", "U", "X", "SCH-S", "SCH-M")

_COMPAT: dict[str, frozenset[str]] = {
    "IS": frozenset({"IS", "IX", "S", "U", "SCH-S"}),
    "IX": frozenset({"IS", "IX", "SCH-S"}),
    "S": frozenset({"IS", "S", "U", "SCH-S"}),
    "U": frozenset({"IS", "S", "SCH-S"}),
    "X": frozenset({"SCH-S"}),
    "SCH-S": frozenset({"IS", "IX", "S", "U", "X", "SCH-S"}),
    "SCH-M": frozenset(),
}


def compatible(requested: str, held: str) -> bool:
    return held in _COMPAT[requested]


Resource = tuple[Any, ...]


class LockConflict(Exception):
    """The request conflicts with locks held by ``blockers`` (session ids)."""

    def __init__(self, resource: Resource, mode: str, blockers: set[int]) -> None:
        super().__init__(resource, mode)
        self.resource = resource
        self.mode = mode
        self.blockers = blockers


class LockManager:
    def __init__(self) -> None:
        # resource -> session id -> list of [mode, duration] holds (applocks may repeat: reference counted)
        self.held: dict[Resource, dict[int, list[list[Any]]]] = {}
        self.by_session: dict[int, set[Resource]] = {}
        # session id -> session ids it waits for (for deadlock detection)
        self.waits: dict[int, set[int]] = {}
        # table object id -> its key resources currently held by anyone (for scan conflict checks)
        self.keyed: dict[Any, set[Resource]] = {}
        # sessions that may hold a STMT-duration lock. Every statement ends with release(sid, STMT), and
        # most statements (SET, BEGIN/COMMIT, writes, SERIALIZABLE reads) take none: without this the end of
        # each statement walked all the transaction's locks for nothing. A superset: added on any STMT
        # grant, dropped only once a release has removed every STMT hold of the session.
        self.stmt_holders: set[int] = set()

    def _new(self, resource: Resource) -> None:
        if resource[0] == "k":
            s = self.keyed.get(resource[1])
            if s is None:
                s = self.keyed[resource[1]] = set()
            s.add(resource)

    def _gone(self, resource: Resource) -> None:
        del self.held[resource]
        if resource[0] == "k":
            s = self.keyed.get(resource[1])
            if s is not None:
                s.discard(resource)
                if not s:
                    del self.keyed[resource[1]]

    def scan_conflicts(self, sid: int, table_id: Any, mode: str) -> tuple[set[Any], Optional[LockConflict]]:
        """Keys of ``table_id`` locked incompatibly with ``mode`` by others, and the first conflict."""
        keys: set[Any] = set()
        first: Optional[LockConflict] = None
        res_set = self.keyed.get(table_id)
        if not res_set:
            return keys, None
        for res in res_set:
            b = self.conflicts(sid, res, mode)
            if b:
                keys.add(res[2])
                if first is None:
                    first = LockConflict(res, mode, b)
        return keys, first

    # ------------------------------------------------------------------ queries

    def conflicts(self, sid: int, resource: Resource, mode: str) -> Optional[set[int]]:
        entry = self.held.get(resource)
        if not entry:
            return None
        blockers: Optional[set[int]] = None
        ok = _COMPAT[mode]
        for other, holds in entry.items():
            if other == sid:
                continue
            for h in holds:
                if h[0] not in ok:
                    if blockers is None:
                        blockers = set()
                    blockers.add(other)
                    break
        return blockers

    def check(self, sid: int, resource: Resource, mode: str) -> None:
        """Raise LockConflict if ``mode`` could not be granted now (nothing is recorded)."""
        entry = self.held.get(resource)
        if entry and (len(entry) > 1 or sid not in entry):
            b = self.conflicts(sid, resource, mode)
            if b:
                raise LockConflict(resource, mode, b)

    def holds(self, sid: int, resource: Resource) -> list[list[Any]]:
        entry = self.held.get(resource)
        if not entry:
            return []
        return entry.get(sid, [])

    def mode_held(self, sid: int, resource: Resource) -> Optional[str]:
        hs = self.holds(sid, resource)
        if not hs:
            return None
        order = {"X": 6, "SCH-M": 7, "U": 4, "IX": 3, "S": 2, "IS": 1, "SCH-S": 0}
        best: str = max((str(h[0]) for h in hs), key=lambda m: order[m])
        return best

    # ------------------------------------------------------------------ acquire / release

    def acquire(self, sid: int, resource: Resource, mode: str, duration: int, counted: bool = False) -> None:
        """Grant or raise LockConflict. Non-counted locks are idempotent per (mode, duration)."""
        entry = self.held.get(resource)
        if duration == STMT:
            self.stmt_holders.add(sid)  # before any grant below (a superset is harmless)
        if entry:
            if len(entry) > 1 or sid not in entry:
                b = self.conflicts(sid, resource, mode)
                if b:
                    raise LockConflict(resource, mode, b)
            mine = entry.get(sid)
            if mine is not None:
                if not counted:
                    for h in mine:
                        if h[0] == mode:
                            if h[1] < duration:
                                h[1] = duration
                            return
                mine.append([mode, duration])
                return
            entry[sid] = [[mode, duration]]
        else:
            self.held[resource] = {sid: [[mode, duration]]}
            self._new(resource)
        s = self.by_session.get(sid)
        if s is None:
            s = self.by_session[sid] = set()
        s.add(resource)

    def release_one(self, sid: int, resource: Resource, duration: int) -> bool:
        """Release one counted hold (applock) of the given duration; False if none."""
        entry = self.held.get(resource)
        if not entry or sid not in entry:
            return False
        holds = entry[sid]
        for i in range(len(holds) - 1, -1, -1):
            if holds[i][1] == duration:
                del holds[i]
                break
        else:
            return False
        if not holds:
            del entry[sid]
            self.by_session.get(sid, set()).discard(resource)
            if not entry:
                self._gone(resource)
        return True

    def release(self, sid: int, max_duration: int) -> bool:
        """Release every lock of the session whose duration <= max_duration. True if anything was released."""
        if max_duration == STMT and sid not in self.stmt_holders:
            return False  # nothing of duration STMT is held (see stmt_holders)
        resources = self.by_session.get(sid)
        self.stmt_holders.discard(sid)  # every duration is >= STMT: the loop below releases all STMT holds
        if not resources:
            return False
        released = False
        for res in list(resources):
            entry = self.held.get(res)
            if entry is None:
                resources.discard(res)
                continue
            holds = entry.get(sid)
            if holds is None:
                resources.discard(res)
                continue
            keep = [h for h in holds if h[1] > max_duration]
            if len(keep) != len(holds):
                released = True
                if keep:
                    entry[sid] = keep
                else:
                    del entry[sid]
                    resources.discard(res)
                    if not entry:
                        self._gone(res)
        return released

    def release_resource_kind(self, sid: int, kind: str, duration: int) -> bool:
        """Release all holds of ``duration`` on resources whose first element is ``kind``."""
        resources = self.by_session.get(sid)
        if not resources:
            return False
        released = False
        for res in list(resources):
            if res[0] != kind:
                continue
            entry = self.held[res]
            holds = entry[sid]
            keep = [h for h in holds if h[1] != duration]
            if len(keep) != len(holds):
                released = True
                if keep:
                    entry[sid] = keep
                else:
                    del entry[sid]
                    resources.discard(res)
                    if not entry:
                        self._gone(res)
        return released

    def has_locks(self, sid: int) -> bool:
        return bool(self.by_session.get(sid))

    # ------------------------------------------------------------------ deadlock detection

    def would_deadlock(self, sid: int, blockers: set[int]) -> bool:
        """True if waiting for ``blockers`` closes a cycle in the wait-for graph."""
        seen: set[int] = set()
        stack = list(blockers)
        while stack:
            s = stack.pop()
            if s == sid:
                return True
            if s in seen:
                continue
            seen.add(s)
            stack.extend(self.waits.get(s, ()))
        return False
