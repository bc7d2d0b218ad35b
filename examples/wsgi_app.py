"""The smallest ext:mssql setup: Beaker's SessionMiddleware around a plain WSGI app.

    BEAKER_MSSQL_URL=mssql://sa:Dev-Only-Passw0rd@127.0.0.1:14330/test python examples/wsgi_app.py

then open http://127.0.0.1:8080/ and reload: the counter lives in SQL Server, so it survives a
restart of this process (and is shared by every process pointing at the same table).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, Callable

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
        "session.url": url or os.environ["BEAKER_MSSQL_URL"],
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

    print("serving on http://127.0.0.1:8080 (Ctrl-C to stop)")
    make_server("127.0.0.1", 8080, make_app()).serve_forever()
