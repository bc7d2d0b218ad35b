"""Shared test setup. The stand-in fixtures (mssql_server, mssql_url, standin, mssql_table) come from the
beaker_mssql pytest plugin, registered once through the pytest11 entry point in pyproject.toml: do not
list it in pytest_plugins here as well (pytest would refuse to register it twice).
"""

pytest_plugins = ["pytester"]  # tests/test_standin_server.py runs small pytest sessions in-process
