"""beaker-mssql: Microsoft SQL Server storage (``ext:mssql``) for Beaker sessions and caches."""

__version__ = "0.1.0"
