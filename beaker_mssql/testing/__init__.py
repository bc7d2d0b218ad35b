"""A SQL Server stand-in for tests: a TDS server that the real pymssql logs into, with an in-process engine.

``SQLServerStandIn`` is the server; ``RealServer`` wraps a real one (BEAKER_MSSQL_TEST_URL) behind the
same surface; the pytest plugin (``beaker_mssql.testing.pytest_plugin``) provides the fixtures.
``Profile`` / ``PROFILES``: the engines the stand-in can behave like (sqlserver, azure, babelfish).
Importing this package is cheap: the engine loads on the first ``start()``.
"""

from .clock import Clock
from .faults import Faults
from .profiles import PROFILES, Profile, get_profile
from .results import MAX, Column, DatabaseChanged, Done, Event, Message, ResultSet, SQLError, SqlType
from .server import RealServer, SQLServerStandIn, run_standin

__all__ = [
    "MAX",
    "PROFILES",
    "Clock",
    "Column",
    "DatabaseChanged",
    "Done",
    "Event",
    "Faults",
    "Message",
    "Profile",
    "RealServer",
    "ResultSet",
    "SQLError",
    "SQLServerStandIn",
    "SqlType",
    "get_profile",
    "run_standin",
]
