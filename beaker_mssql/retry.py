"""Which failures are worth another attempt, and whether the first attempt may have taken effect.

The store asks this module two questions about every failed statement, and nothing else decides them:

* :func:`classify` -> is it *transient* (the same request can succeed a moment later: a deadlock
  victim, a lock timeout, a broken connection, an Azure SQL reconfiguration) and, if so, is its
  outcome *definite* (the server certainly did not apply it: it rolled it back or never ran it) or
  *ambiguous* (the request may have been committed before the reply was lost)?
* :class:`Backoff` -> how long to wait before the next attempt: exponential with full jitter, so that
  many threads failing together do not come back together.

Why the distinction matters: re-sending a write whose first attempt may already have committed can
undo somebody else's later write (a logout deleting the row, a newer save). So the store re-sends an
ambiguous write only in a form that cannot do that (see ``MSSQLStore.save``); reads, deletes and
definite failures are simply run again.
"""

from __future__ import annotations

import dataclasses
import random
import re
from enum import Enum
from typing import Optional

__all__ = ["AMBIGUOUS", "DEFINITE", "Backoff", "Outcome", "classify", "login_error_number",
           "login_is_transient"]


class Outcome(Enum):
    """What a failed statement did on the server, as far as the client can know."""

    PERMANENT = "permanent"  # not transient: report it
    DEFINITE = "definite"  # transient, and certainly not applied: safe to run again
    AMBIGUOUS = "ambiguous"  # transient, but it may have been applied before the reply was lost


DEFINITE = Outcome.DEFINITE
AMBIGUOUS = Outcome.AMBIGUOUS

# Server errors after which the statement was rolled back or never started.
# 1205 deadlock victim, 1222 lock request timeout: https://learn.microsoft.com/sql/relational-databases/errors-events/
# 40501 service busy, 49918-49920 too many requests, 10928/10929 resource limits, 40540 service busy
# (Azure SQL transient errors: https://learn.microsoft.com/azure/azure-sql/database/troubleshoot-common-errors-issues).
# 41302/41305/41325/41301/41839: memory-optimized table conflicts, the transaction was aborted
# (https://learn.microsoft.com/sql/relational-databases/in-memory-oltp/transactions-with-memory-optimized-tables).
DEFINITE_NUMBERS = frozenset({1205, 1222, 40501, 40540, 49918, 49919, 49920, 10928, 10929,
                              41301, 41302, 41305, 41325, 41839})

# Errors that end the connection while a request may be in flight: the database is being moved or
# restarted (40613, 40197, 4221 read-only replica change), or the network dropped (233, 10053,
# 10054, 10060, 64), or DB-Library lost the server (20002-20047: see pool.BROKEN_NUMBERS).
AMBIGUOUS_NUMBERS = frozenset({40613, 40197, 4221, 233, 10053, 10054, 10060, 64})

# A write refused by a database that became read-only (3906: an availability-group secondary after a
# failover): nothing was applied, and the connection points at the wrong replica.
READ_ONLY_NUMBERS = frozenset({3906})


# Login failures worth another attempt. pymssql reports the *first* login error number a process
# ever saw for every later failed login (its module keeps it), so the number cannot be trusted: what
# the driver says about this attempt is its text and the severity of the server's message.
_NETWORK_LOGIN_TEXT = ("connection refused", "connection reset", "unable to connect", "timed out",
                       "adaptive server is unavailable", "tds server is unavailable",
                       "network is unreachable", "no route to host", "broken pipe",
                       # the server closed the socket under the login (a restart, a failover, a cut TLS
                       # handshake): FreeTDS's 20017, python-tds's ClosedConnectionError
                       "unexpected eof from the server", "server closed connection")
_TRANSIENT_LOGIN_TEXT = ("is not currently available", "service is currently busy",
                         "service has encountered an error", "please retry", "too many requests")
_NEVER_RETRY_LOGIN_TEXT = ("login failed", "password", "cannot open database", "certificate")
_SEVERITY = re.compile(r"db-lib error message 20018, severity (\d+)")
_MISSING_DATABASE = re.compile(r"database ['\"][^'\"]*['\"] does not exist")


def login_is_transient(message: str, connected_before: bool) -> bool:
    """Is a failed login worth another attempt within the budget?

    Yes for network failures (refused or reset TCP: a listener moving during a failover, a server
    restarting) and for Azure SQL's "not available / busy" answers (40613, 40197, 40501: severity 17
    and up). Never for a wrong password (18456, severity 14) or an unknown database (4060, severity
    11), except that 4060 after this pool has logged in before is a database moving mid-failover.
    """
    text = message.lower()
    if any(marker in text for marker in _TRANSIENT_LOGIN_TEXT):
        return True
    if _MISSING_DATABASE.search(text):  # Babelfish's 911 (severity 16) for an unknown database: like 4060
        return connected_before
    severity = _SEVERITY.search(text)
    if severity is not None:
        level = int(severity.group(1))
        if level >= 16:
            return True
        return level == 11 and connected_before  # 4060 while failing over
    if any(marker in text for marker in _NEVER_RETRY_LOGIN_TEXT):
        return False
    return any(marker in text for marker in _NETWORK_LOGIN_TEXT)


# Severity SQL Server sends with each login error (sys.messages), to catch pymssql's stale numbers.
_LOGIN_SEVERITY = {18456: 14, 18452: 14, 18470: 14, 18486: 14, 18487: 14, 18488: 14, 4060: 11,
                   40613: 17, 40197: 20, 40501: 20}


def login_error_number(number: Optional[int], message: str) -> Optional[int]:
    """The error number of *this* failed login, as far as the driver's text tells.

    pymssql repeats the most severe login error number a process has seen (a 40613 from a failover
    makes every later wrong password read 40613), but the severity in its DB-Library line is this
    attempt's own: where the two disagree, the severity names the error (14: login failed, 11: the
    database cannot be opened), or the number is unknown.
    """
    found = _SEVERITY.search(message.lower())
    if found is None or number is None:
        return number
    severity = int(found.group(1))
    if _LOGIN_SEVERITY.get(number, severity) == severity:
        return number
    return {14: 18456, 11: 4060}.get(severity)


def classify(number: Optional[int], broken: bool) -> Outcome:
    """The :class:`Outcome` of a failed statement with error ``number``; ``broken``: the connection died."""
    if number in DEFINITE_NUMBERS or number in READ_ONLY_NUMBERS:
        return Outcome.DEFINITE
    if broken or number in AMBIGUOUS_NUMBERS:
        return Outcome.AMBIGUOUS
    return Outcome.PERMANENT


@dataclasses.dataclass
class Backoff:
    """Exponential backoff with full jitter, bounded by a time budget.

    ``delay(n)`` for the n-th retry (1-based) is uniform in ``[0, min(cap, base * 2**(n-1))]``: the
    "full jitter" scheme, which spreads a crowd of clients that failed at the same moment. The first
    retry of a definite failure waits nothing (a deadlock victim should simply run again).
    """

    base: float = 0.05
    cap: float = 2.0

    def delay(self, retry: int, outcome: Outcome) -> float:
        if retry <= 1 and outcome is Outcome.DEFINITE:
            return 0.0
        return random.uniform(0.0, min(self.cap, self.base * (2 ** (retry - 1))))
