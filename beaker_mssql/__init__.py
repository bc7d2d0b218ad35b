"""beaker-mssql: Microsoft SQL Server storage (``ext:mssql``) for Beaker sessions and caches."""

from beaker_mssql.errors import (
    ConfigurationError,
    ConnectionFailedError,
    CorruptSessionError,
    DatabaseError,
    InvalidCacheKey,
    InvalidSessionId,
    LockNotGrantedError,
    MSSQLStoreError,
    PoolTimeoutError,
    SerializationError,
    SidCaseConflictError,
    TableMissingError,
    UncachedValueWarning,
)
from beaker_mssql.namespace import MSSQLNamespaceManager
from beaker_mssql.store import MSSQLStore

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "ConnectionFailedError",
    "CorruptSessionError",
    "DatabaseError",
    "InvalidCacheKey",
    "InvalidSessionId",
    "LockNotGrantedError",
    "MSSQLNamespaceManager",
    "MSSQLStore",
    "MSSQLStoreError",
    "PoolTimeoutError",
    "SerializationError",
    "SidCaseConflictError",
    "TableMissingError",
    "UncachedValueWarning",
    "__version__",
]
