"""Fault injection for the stand-in: make it fail the way a real SQL Server sometimes does.

Retry loops, pool invalidation and error mapping can only be tested if the failures are
reproducible; these switches make them happen on the next login, request or matching statement.
"""

from __future__ import annotations

import re
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Optional

from .results import SQLError

# number -> (severity, state, text); "{0}" is filled with a context word (object, database, user).
KNOWN_ERRORS: dict[int, tuple[int, int, str]] = {
    102: (15, 1, "Incorrect syntax near '{0}'."),
    156: (15, 1, "Incorrect syntax near the keyword '{0}'."),
    207: (16, 1, "Invalid column name '{0}'."),
    208: (16, 1, "Invalid object name '{0}'."),
    515: (16, 2, "Cannot insert the value NULL into column '{0}'; column does not allow nulls. "
                 "INSERT fails."),
    1205: (13, 51, "Transaction (Process ID {0}) was deadlocked on lock resources with another process "
                   "and has been chosen as the deadlock victim. Rerun the transaction."),
    1222: (16, 45, "Lock request time out period exceeded."),
    2601: (14, 1, "Cannot insert duplicate key row in object '{0}' with unique index 'IX'. "
                  "The duplicate key value is (?)."),
    2627: (14, 1, "Violation of PRIMARY KEY constraint 'PK'. Cannot insert duplicate key in object '{0}'. "
                  "The duplicate key value is (?)."),
    2628: (16, 1, "String or binary data would be truncated in table '{0}', column '?'. "
                  "Truncated value: '?'."),
    3906: (16, 1, 'Failed to update database "{0}" because the database is read-only.'),
    4060: (11, 1, 'Cannot open database "{0}" requested by the login. The login failed.'),
    18456: (14, 1, "Login failed for user '{0}'."),
    40197: (20, 1, "The service has encountered an error processing your request. Please try again."),
    40501: (20, 1, "The service is currently busy. Retry the request after 10 seconds."),
    # learn.microsoft.com/azure/azure-sql/database/troubleshoot-common-errors-issues ("List of transient
    # fault error codes"): "Database '%.*ls' on server '%.*ls' is not currently available. ..." -- the
    # database the login asked for, the server's name and a session tracing ID.
    40613: (17, 1, "Database '{0}' on server '{1}' is not currently available. Please retry the connection "
                   "later. If the problem persists, contact customer support, and provide them with the "
                   "session tracing ID of '{2}'."),
}


def make_error(number: int, context: str = "?", message: Optional[str] = None, *,
               server: str = "?") -> SQLError:
    """An SQLError with SQL Server's severity, state and wording for ``number`` (generic if unknown).

    ``context`` fills the text's first blank (object, database, user); ``server`` the server name where
    the text has one (40613), followed by a fresh session tracing ID as Azure SQL gives each refusal.
    """
    severity, state, text = KNOWN_ERRORS.get(
        number, (16, 1, f"Error {number} injected by the stand-in's fault switches."))
    if message is None:
        message = text.format(context, server, str(uuid.uuid4()).upper())
    return SQLError(number, message, severity, state)


@dataclass
class _ReplyCut:
    pattern: Optional[re.Pattern[str]]
    ran: threading.Event
    hold: Optional[threading.Event]


@dataclass
class _ErrorRule:
    number: int
    remaining: Optional[int]  # None: every time
    pattern: Optional[re.Pattern[str]]
    message: Optional[str]


class Faults:
    """Switches the server consults on every login, request and statement. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refuse_remaining: Optional[int] = 0
        self._refuse_number = 18456
        self._drop_remaining = 0
        self._errors: list[_ErrorRule] = []
        self._cuts: list[_ReplyCut] = []
        self._latency = 0.0
        self._login_latency = 0.0
        self._refuse_until: Optional[tuple[datetime, Callable[[], datetime], int]] = None

    # -- the switches -------------------------------------------------------------------------------

    def refuse_logins(self, times: Optional[int] = None, number: int = 18456, *,
                      n: Optional[int] = None) -> None:
        """Fail the next ``times`` logins (None: all, until clear()) with error ``number``.

        18456 looks like a wrong password, 4060 like a missing database, 40613 like Azure failing over.
        ``n`` is an alias of ``times``.
        """
        if n is not None:
            times = n
        with self._lock:
            self._refuse_remaining = times
            self._refuse_number = number

    def drop_next_request(self, times: int = 1, *, n: Optional[int] = None) -> None:
        """Close the connection, without answering, when each of the next ``times`` requests arrives."""
        if n is not None:
            times = n
        with self._lock:
            self._drop_remaining = times

    def raise_error(self, number: int, times: Optional[int] = 1, pattern: Optional[str] = None,
                    message: Optional[str] = None) -> None:
        """Make the next ``times`` statements (matching regex ``pattern``, any case) fail with ``number``.

        The error goes through the engine's normal error path, so 1205 rolls the transaction back and
        aborts the batch exactly like a real deadlock victim. ``times=None`` keeps failing until clear().
        """
        rule = _ErrorRule(number, times, re.compile(pattern, re.IGNORECASE | re.DOTALL) if pattern else None,
                          message)
        with self._lock:
            self._errors.append(rule)

    def cut_reply(self, pattern: Optional[str] = None,
                  hold: Optional[threading.Event] = None) -> threading.Event:
        """Run the next request matching regex ``pattern`` (any if None) to its end, committed, and then
        close the connection instead of answering: the client cannot tell whether it took effect.

        With ``hold``, the reply is held until ``hold`` is set (a stalled reply: meanwhile other clients
        can act on the committed result), then the connection is closed. Returns an event that is set
        once the request has run, so a test can wait on it instead of sleeping.
        """
        rule = _ReplyCut(re.compile(pattern, re.IGNORECASE | re.DOTALL) if pattern else None,
                         threading.Event(), hold)
        with self._lock:
            self._cuts.append(rule)
        return rule.ran

    def take_reply_cut(self, sql_text: str) -> Optional[tuple[threading.Event, Optional[threading.Event]]]:
        """(ran, hold) of the first cut rule matching this request (consumed), or None."""
        with self._lock:
            for rule in self._cuts:
                if rule.pattern is None or rule.pattern.search(sql_text):
                    self._cuts.remove(rule)
                    return rule.ran, rule.hold
        return None

    def latency(self, seconds: float) -> None:
        """Delay every request by ``seconds`` before it runs (0 turns it off)."""
        with self._lock:
            self._latency = max(0.0, float(seconds))

    def clear(self) -> None:
        """Turn every fault off."""
        with self._lock:
            self._refuse_remaining = 0
            self._refuse_number = 18456
            self._drop_remaining = 0
            self._errors.clear()
            self._cuts.clear()
            self._latency = 0.0
            self._login_latency = 0.0
            self._refuse_until = None

    # -- what the server asks -----------------------------------------------------------------------

    def refuse_logins_until(self, deadline: datetime, now: Callable[[], datetime],
                            number: int = 40613) -> None:
        """Refuse every login with ``number`` until ``now()`` reaches ``deadline`` (see server.failover)."""
        with self._lock:
            self._refuse_until = (deadline, now, number)

    def login_latency(self, seconds: float) -> None:
        """Delay every login's answer by ``seconds`` (a slow login: a server under recovery)."""
        with self._lock:
            self._login_latency = max(0.0, float(seconds))

    @property
    def login_delay(self) -> float:
        return self._login_latency

    def take_login_refusal(self, user: str, database: str, server: str = "?") -> Optional[SQLError]:
        """The error to refuse this login with, consuming one refusal, or None.

        ``database`` is the one the login asked for and ``server`` the server's name: 4060 and 40613
        name them, 18456 names the user.
        """
        with self._lock:
            until = self._refuse_until
            if until is not None:
                deadline, now, number = until
                if now() < deadline:
                    return make_error(number, database, server=server)
                self._refuse_until = None
            remaining = self._refuse_remaining
            if remaining is not None and remaining <= 0:
                return None
            if remaining is not None:
                self._refuse_remaining = remaining - 1
            number = self._refuse_number
        return make_error(number, user if number == 18456 else database, server=server)

    def take_drop(self) -> bool:
        """True if this request should be answered by closing the connection."""
        with self._lock:
            if self._drop_remaining > 0:
                self._drop_remaining -= 1
                return True
            return False

    def statement_error(self, sql_text: str, spid: int, database: str = "?",
                        server: str = "?") -> Optional[SQLError]:
        """The injected error for this statement, consuming one use of the first matching rule, or None.

        ``database`` (the session's) and ``server`` fill the texts that name them (40613)."""
        with self._lock:
            if not self._errors:
                return None
            for rule in self._errors:
                if rule.pattern is not None and not rule.pattern.search(sql_text):
                    continue
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self._errors.remove(rule)
                context = str(spid) if rule.number == 1205 else database if rule.number == 40613 else "?"
                return make_error(rule.number, context, rule.message, server=server)
            return None

    @property
    def request_latency(self) -> float:
        return self._latency

    @property
    def active(self) -> bool:
        """Whether any switch is on (cheap check for the hot path)."""
        return bool(self._refuse_remaining != 0 or self._drop_remaining or self._errors or self._latency
                    or self._cuts)
