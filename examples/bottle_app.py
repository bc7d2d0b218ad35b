"""Bottle + Beaker sessions in SQL Server: a visit counter and a login, through SessionMiddleware.

    python examples/bottle_app.py        # a stand-in SQL Server, started here (data in var/)
    BEAKER_MSSQL_URL='mssql://user:password@host:1433/db' python examples/bottle_app.py   # your server

(``PORT=8081`` for another port) then ``curl -c jar -b jar http://127.0.0.1:8080/`` (JSON) and
``curl -c jar -b jar -d username=ann http://127.0.0.1:8080/login``. Run this way the example
passes ``create_table=True``; in your own app create the table once (``beaker-mssql create-table``)
or the first request raises ``beaker_mssql.TableMissingError`` naming the table.
"""

from __future__ import annotations

import os
from typing import Any

import bottle
from _server import database_url, url_from_environment
from beaker.middleware import SessionMiddleware

from beaker_mssql.integrations import end_session


def _session() -> Any:
    return bottle.request.environ["beaker.session"]


def index() -> dict[str, Any]:
    """Count this browser's visits."""
    session = _session()
    session["visits"] = session.get("visits", 0) + 1
    session.save()
    return {"visits": session["visits"], "user": session.get("user")}


def login() -> dict[str, Any]:
    """Log in with a NEW session id: an id planted before login is worth nothing (fixation)."""
    username = (bottle.request.forms.get("username") or "").strip()
    if not username:
        bottle.response.status = 400
        return {"error": "username is required"}
    session = _session()
    visits = session.get("visits", 0)
    end_session(session)  # delete the pre-login row; session.invalidate() gives the new id
    session["visits"] = visits
    session["user"] = username
    session.save()
    return {"user": username}


def logout() -> dict[str, Any]:
    """Log out: delete the row now, continue with a new empty session id (see end_session)."""
    end_session(_session())
    return {"user": None}


def build_bottle() -> bottle.Bottle:
    """The Bottle app alone (routes only); :func:`make_app` adds the session middleware."""
    app = bottle.Bottle()
    app.route("/", method="GET", callback=index)
    app.route("/login", method="POST", callback=login)
    app.route("/logout", method="POST", callback=logout)
    return app


def make_app(url: str | None = None, table: str = "[dbo].[sessions]", **options: Any) -> SessionMiddleware:
    """Bottle app + SessionMiddleware; ``options`` are extra ``session.*`` settings (no prefix)."""
    config: dict[str, Any] = {
        "session.type": "ext:mssql",
        "session.url": url or url_from_environment("bottle_app.py"),
        "session.table": table,
        "session.ttl": 1800,
        "session.key": "bottle_example",
        "session.secret": os.environ.get("SESSION_SECRET", "change-me-to-a-long-random-string"),
        "session.httponly": True,
        "session.samesite": "Lax",
        "session.data_serializer": "json",
    }
    config.update({f"session.{key}": value for key, value in options.items()})
    return SessionMiddleware(build_bottle(), config)


if __name__ == "__main__":
    from beaker_mssql.diagnostics import mask_url

    port = int(os.environ.get("PORT", "8080"))
    db_url, standin, source = database_url("bottle_app")
    print(f"database: {mask_url(db_url)} ({source})", flush=True)
    try:
        bottle.run(make_app(db_url, create_table=True), host="127.0.0.1", port=port)
    finally:
        if standin is not None:
            standin.close()
