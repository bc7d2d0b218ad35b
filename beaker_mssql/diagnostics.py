"""Messages for people: structural password masking, login-failure summaries, "did you mean" hints.

Kept free of I/O and of the driver so every message can be tested as a pure function. Masking is
*structural*: a password is hidden where it sits (the userinfo of a URL, the value of a password
option), never by searching the text for the password string. Searching mangles messages when the
password is short (``e`` turns ``error`` into ``***rror``) and so even shows where it is.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Optional

__all__ = [
    "DEFAULT_PORT",
    "MASK",
    "closest",
    "login_failure_message",
    "mask_url",
    "server_reason",
]

MASK = "***"
DEFAULT_PORT = 1433  # SQL Server's default TCP port (what FreeTDS uses when no port is given)

# A URL starts at "scheme://"; it runs to the next whitespace (a password with a space must be
# percent-encoded anyway). Within it, credentials end at the *last* "@", as config.parse_url reads them.
_URL_START = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_DBLIB_MARKER = re.compile(r"DB-Lib error message \d+, severity \d+:")
_NETLIB = re.compile(r"Net-Lib error during ([^\r\n]+)")
_LOGIN_REFUSED = frozenset({18456, 18452, 18470, 18486, 18487, 18488})
# FreeTDS's words for "nothing usable answered at that address" (refused, unknown host, timeout).
_NETWORK_MARKERS = (
    "connection refused",
    "unable to connect",
    "unavailable or does not exist",
    "timed out",
    "no route to host",
    "name or service not known",
)
# DB-Lib 20018's text: the server sent a message that the driver did not pass on.
_GENERIC_SERVER_ERROR = "general sql server error: check messages from the sql server"
_DATABASE_REFUSED = frozenset({4060, 911})  # 911: an unknown database on Babelfish (issue 9)
# The server says "not now" (Azure SQL failover, scaling, throttling): per Microsoft's list of transient
# errors, https://learn.microsoft.com/azure/azure-sql/database/troubleshoot-common-errors-issues
_TEMPORARY = frozenset({40613, 40197, 40501, 49918, 49919, 49920, 10928, 10929, 4221})

PERCENT_ENCODING_HINT = (
    "percent-encode special characters in a URL password: @ %40, # %23, % %25, / %2F, : %3A"
)


def mask_url(text: str) -> str:
    """Every ``scheme://user:secret@host`` in ``text`` -> ``scheme://user:***@host``; nothing else changes.

    The secret is whatever lies between the first ``:`` of the userinfo and the last ``@`` of the
    whitespace-delimited URL, so a password holding ``@``, ``#``, ``/`` or ``:`` is hidden whole.
    """
    out: list[str] = []
    pos = 0
    for match in _URL_START.finditer(text):
        start = match.end()
        if start < pos:
            continue  # inside a URL already handled
        end = start
        while end < len(text) and not text[end].isspace():
            end += 1
        token = text[start:end]
        at = token.rfind("@")
        colon = token.find(":", 0, at) if at > 0 else -1
        out.append(text[pos:start])
        if colon >= 0:
            out.append(token[: colon + 1] + MASK + token[at:])
        else:
            out.append(token)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def server_reason(driver_text: str) -> str:
    """The one sentence worth showing from pymssql/FreeTDS login text, which repeats itself.

    pymssql puts the server's own messages first (``Login failed for user 'sa'.``), then one
    ``DB-Lib error message N, severity S:`` block per FreeTDS message, often several times. The
    server's text wins; without it (nothing answered) the Net-Lib cause (``Connection refused
    (111)``), else the first DB-Lib line.
    """
    text = driver_text.strip()
    if not text:
        return ""
    parts = _DBLIB_MARKER.split(text)
    server_part = " ".join(parts[0].split())
    if server_part:
        return server_part
    netlib = _NETLIB.search(text)
    if netlib:
        return " ".join(netlib.group(1).split())
    for part in parts[1:]:
        first = part.strip().splitlines()[0].strip() if part.strip() else ""
        if first.lower() == _GENERIC_SERVER_ERROR:
            return "the server refused the login (the driver passed on no reason)"
        if first:
            return first
    return " ".join(text.split())


def login_failure_message(
    method: str,
    server: str,
    port: Optional[int],
    user: Optional[str],
    database: str,
    number: Optional[int],
    driver_text: str,
) -> str:
    """One short line for a failed login: where it tried, the server's reason once, what to check.

    ``port`` None means the driver's default (1433), unless ``server`` names an instance
    (``host\\instance``), whose port SQL Browser (UDP 1434) supplies.
    """
    if "\\" in server and port is None:
        where = f"{server} (port from SQL Browser, UDP 1434)"
    else:
        host = server.split("\\", 1)[0]
        where = f"{host}:{DEFAULT_PORT if port is None else port}"
    who = f" as {user}" if user else ""
    db = f"database {database}" if database else "the login's default database"
    reason = server_reason(driver_text) or "no answer"
    lowered = reason.lower()
    # pymssql keeps the most severe login error number of the process, so the number can be stale:
    # the text decides, and a server number is not shown beside a network failure.
    unreachable = any(marker in driver_text.lower() for marker in _NETWORK_MARKERS)
    network = unreachable and "login failed" not in lowered
    shown_number = number if not (network and number is not None and number < 20000) else None
    code = "" if shown_number is None else f" (error {shown_number})"
    if network:
        hint = (
            f"is SQL Server running on {where} and accepting TCP connections? "
            f"(no port given means {DEFAULT_PORT})"
        )
    elif number in _TEMPORARY or "not currently available" in lowered or "retry" in lowered:
        hint = (
            "the server says this is temporary (a failover, scaling or throttling): try again, or allow "
            "more time with retry_budget"
        )
    elif "cannot open database" in lowered or (number in _DATABASE_REFUSED and "login failed" not in lowered):
        hint = "check the database name and that this login may use it"
    elif number in _LOGIN_REFUSED or "login failed" in lowered or "refused the login" in lowered:
        hint = f"check the user name, the password and the database name; {PERCENT_ENCODING_HINT}"
    else:
        hint = f"check that SQL Server runs on {where}, then the user name and password"
    return f"{method}: login to {where}{who} ({db}) failed: {reason.rstrip('.')}{code}. Hint: {hint}."


def closest(name: str, candidates: Iterable[str]) -> Optional[str]:
    """The candidate ``name`` was most likely meant to be (``tll`` -> ``ttl``), or None."""
    matches = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None
