"""The database for running an example by hand: ``$BEAKER_MSSQL_URL``, else a stand-in started here.

Shared by ``wsgi_app.py`` and ``bottle_app.py`` so each runs with one command and nothing installed
(the stand-in keeps its data in ``var/<name>-standin.json``: sessions survive a restart).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from beaker_mssql.testing import SQLServerStandIn

ROOT = Path(__file__).resolve().parent.parent


def database_url(name: str) -> tuple[str, Optional[SQLServerStandIn], str]:
    """(url, the stand-in to close or None, where the data lives) for the example ``name``."""
    url = os.environ.get("BEAKER_MSSQL_URL", "").strip()
    if url:
        return url, None, "BEAKER_MSSQL_URL"
    data_file = ROOT / "var" / f"{name}-standin.json"
    data_file.parent.mkdir(parents=True, exist_ok=True)
    standin = SQLServerStandIn(data_file=str(data_file)).start()
    return standin.url, standin, f"the SQL Server stand-in, data in {data_file}"


def url_from_environment(example: str) -> str:
    """``$BEAKER_MSSQL_URL``, or an error that says how to run the example instead of a KeyError."""
    url = os.environ.get("BEAKER_MSSQL_URL", "").strip()
    if not url:
        raise RuntimeError(
            "make_app() needs a database: pass url=..., set "
            "BEAKER_MSSQL_URL=mssql://user:password@host:port/db, or run "
            f"`python examples/{example}`, which starts a stand-in SQL Server when BEAKER_MSSQL_URL is unset"
        )
    return url
