"""The smallest ext:mssql setup: Beaker's SessionMiddleware around a plain WSGI app.

    python examples/wsgi_app.py          # a stand-in SQL Server, started here (data in var/)
    BEAKER_MSSQL_URL='mssql://user:password@host:1433/db' python examples/wsgi_app.py   # your server

then open http://127.0.0.1:8080/ (``PORT=8081`` for another port) and reload: the counter lives in
SQL Server, so it survives a restart of this process (and is shared by every process pointing at the
same table).

The table must exist. Run this way, the example passes ``create_table=True`` (idempotent DDL at the
first request; the login needs db_ddladmin). In your own app, either do the same or create the
table once with ``beaker-mssql create-table --url ...``: without it the first request fails with
``beaker_mssql.TableMissingError`` (a 500), whose message names the table and these two fixes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, Callable

from _server import database_url, url_from_environment
from beaker.middleware import SessionMiddleware

StartResponse = Callable[..., Any]


def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Count this browser's visits in its session."""
    session = environ["beaker.session"]
    session["visits"] = session.get("visits", 0) + 1
    session.save()  # Beaker writes only sessions marked as saved (one upsert at the end of the request)
    body = f"visits: {session['visits']}\n".encode()
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    start_response("200 OK", headers)
    return [body]


def make_app(url: str | None = None, table: str = "[dbo].[sessions]", **options: Any) -> SessionMiddleware:
    """Wrap :func:`application`; ``options`` are extra ``session.*`` settings (without the prefix)."""
    config: dict[str, Any] = {
        "session.type": "ext:mssql",  # the backend beaker-mssql registers
        "session.url": url or url_from_environment("wsgi_app.py"),
        "session.table": table,
        "session.ttl": 3600,  # seconds a row lives after each save (database clock)
        "session.key": "wsgi_example",
        "session.secret": os.environ.get("SESSION_SECRET", "change-me-to-a-long-random-string"),
        "session.httponly": True,
        "session.samesite": "Lax",
        "session.data_serializer": "json",
    }
    config.update({f"session.{key}": value for key, value in options.items()})
    return SessionMiddleware(application, config)


if __name__ == "__main__":
    from wsgiref.simple_server import make_server

    from beaker_mssql.diagnostics import mask_url

    port = int(os.environ.get("PORT", "8080"))
    db_url, standin, source = database_url("wsgi_app")
    try:
        with make_server("127.0.0.1", port, make_app(db_url, create_table=True)) as httpd:
            print(f"database: {mask_url(db_url)} ({source})", flush=True)
            print(f"serving on http://127.0.0.1:{port} (Ctrl-C to stop)", flush=True)
            httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        if standin is not None:
            standin.close()
