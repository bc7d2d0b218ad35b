"""A small Pyramid app whose sessions and cache live in SQL Server (``ext:mssql``) via pyramid_beaker.

Everything Beaker-related is configured in ``development.ini``; the code only uses Pyramid's
session API (``request.session``) and a Beaker cache region, as any Pyramid app would.

Run it: ``make demo`` (stand-in server), or after
``beaker-mssql standin --port 14330 --password Dev-Only-Passw0rd``:
``PYTHONPATH=examples pserve examples/pyramid_app/development.ini``.
"""

from __future__ import annotations

import configparser
import html
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from beaker.cache import Cache, cache_regions
from pyramid.config import Configurator
from pyramid.csrf import get_csrf_token
from pyramid.httpexceptions import HTTPSeeOther
from pyramid.request import Request
from pyramid.response import Response
from pyramid.router import Router

from beaker_mssql.integrations import end_session

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_INI = os.path.join(HERE, "development.ini")
REPORT_CACHE = "pyramid_app.report_cache"
# Optional: a callable(request) -> HTML that examples/demo.py registers to show the session's row.
INSPECTOR = "pyramid_app.inspector"
REPORT_REGION = "short_term"

# How often the "expensive" report was really computed (the cached view shows it).
COMPUTATIONS = {"count": 0}


def load_settings(ini_path: str = DEFAULT_INI, section: str = "app:main") -> dict[str, str]:
    """The app settings of ``section`` as plain strings, with ``%(here)s`` expanded like PasteDeploy.

    Tests and ``examples/demo.py`` use this, then override ``session.url``/``cache.url``.
    """
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    with open(ini_path, encoding="utf-8") as handle:
        parser.read_file(handle)
    here = os.path.dirname(os.path.abspath(ini_path))
    return {
        key: value.replace("%(here)s", here).strip()
        for key, value in parser.items(section)
        if key != "use"
    }


STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem;
       color: #1d2430; background: #fafbfc; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.15rem; margin-top: 1.6rem; }
.lead { color: #4a5568; margin-top: 0; }
section { background: #fff; border: 1px solid #d9dee5; border-radius: 8px; padding: .4rem 1.2rem 1rem;
          margin: 1rem 0; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .3rem 1rem; }
dt { color: #4a5568; } dd { margin: 0; font-family: ui-monospace, monospace; word-break: break-all; }
pre, code { font-family: ui-monospace, monospace; font-size: .9rem; }
pre { background: #f1f3f6; padding: .7rem; border-radius: 6px; overflow-x: auto; white-space: pre-wrap; }
button { font: inherit; padding: .3rem .9rem; border-radius: 6px; border: 1px solid #3b5bdb;
         background: #3b5bdb; color: #fff; cursor: pointer; }
input { font: inherit; padding: .25rem .5rem; } .flash { color: #2b8a3e; } .note { color: #4a5568; }
.warn { color: #c92a2a; }
"""


def _page(request: Request, title: str, body: str) -> Response:
    return Response(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        content_type="text/html",
        charset="utf-8",
    )


def home(request: Request) -> Response:
    """Visit counter + flash messages + login/logout forms."""
    session = request.session
    session["visits"] = int(session.get("visits", 0)) + 1
    user = session.get("user")
    token = html.escape(get_csrf_token(request))
    flashes = "".join(f"<li class='flash'>{html.escape(str(m))}</li>" for m in session.pop_flash())
    if user:
        account = (
            f"<p>Logged in as <b id='user'>{html.escape(str(user))}</b></p>"
            "<form id='logout' method='post' action='/logout'>"
            f"<input type='hidden' name='csrf_token' value='{token}'>"
            "<button type='submit'>Log out</button></form>"
        )
    else:
        account = (
            "<form id='login' method='post' action='/login'>"
            f"<input type='hidden' name='csrf_token' value='{token}'>"
            "<input name='username' placeholder='name'> <button type='submit'>Log in</button></form>"
        )
    inspector = request.registry.get(INSPECTOR)
    body = (
        "<h1>beaker-mssql example</h1>"
        "<p class='lead'>A Pyramid app whose sessions (<code>request.session</code>) and cache live in "
        "SQL Server through Beaker's <code>ext:mssql</code> backend.</p>"
        f"<ul>{flashes}</ul>"
        "<section><h2>Your session</h2>"
        f"<p>Visits in this session: <b id='visits'>{session['visits']}</b></p>"
        f"{account}<p><a href='/report'>A cached report</a> (a Beaker cache region in its own table)</p>"
        "</section>"
        f"{inspector(request) if inspector is not None else ''}"
    )
    return _page(request, "beaker-mssql example", body)


def whoami(request: Request) -> dict[str, Any]:
    """The session as JSON, without changing it (used by the tests and handy for curl)."""
    session = request.session
    return {"user": session.get("user"), "visits": session.get("visits", 0)}


def login(request: Request) -> HTTPSeeOther:
    """Log in: a NEW session id first, so an id planted before login is worth nothing (fixation)."""
    username = str(request.POST.get("username", "")).strip()
    if not username:
        request.session.flash("Please enter a name.")
        return HTTPSeeOther(location="/")
    visits = request.session.get("visits", 0)
    end_session(request.session)  # the pre-login row is deleted; session.invalidate() gives a new id
    request.session["visits"] = visits
    request.session["user"] = username
    request.session.flash(f"Welcome, {username}!")
    return HTTPSeeOther(location="/")


def logout(request: Request) -> HTTPSeeOther:
    """Log out: delete the row now and continue with a new, empty session id.

    (Beaker's own ``session.delete()`` would save the emptied session under the same id.)
    """
    end_session(request.session)
    request.session.flash("You are logged out.")
    return HTTPSeeOther(location="/")


def _compute_report(day: str) -> dict[str, Any]:
    """Stands for an expensive query; counts how often it really runs."""
    COMPUTATIONS["count"] += 1
    return {
        "day": day,
        "computed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "computation": COMPUTATIONS["count"],
    }


def report(request: Request) -> Response:
    """A view cached through the Beaker region ``short_term`` (rows in SQL Server, shared by processes)."""
    day = str(request.GET.get("day", "today"))
    cache: Cache = request.registry[REPORT_CACHE]
    data = cache.get(day, createfunc=lambda: _compute_report(day))
    body = (
        f"<h1>Report for {html.escape(day)}</h1>"
        f"<p>computed at <span id='computed_at'>{html.escape(data['computed_at'])}</span>, "
        f"computation number <b id='computation'>{data['computation']}</b></p>"
        "<p><a href='/'>back</a></p>"
    )
    return _page(request, "report", body)


def main(global_config: Mapping[str, Any], **settings: Any) -> Router:
    """The WSGI app factory PasteDeploy (``pserve``) calls with the ``[app:main]`` settings."""
    with Configurator(settings=settings) as config:
        # pyramid.includes (pyramid_beaker, beaker_mssql.integrations.pyramid) has run by now:
        # the session factory is set and Beaker's cache regions are configured.
        config.set_default_csrf_options(require_csrf=True)
        region = cache_regions.get(REPORT_REGION)
        if region is None:
            raise ValueError(f"cache region {REPORT_REGION!r} is not configured (cache.regions)")
        # One Cache per app (not a module-level decorator), so two apps with different settings in
        # one process, as in the tests, each use their own database table.
        config.registry[REPORT_CACHE] = Cache("pyramid_app.report", **region)
        config.add_route("home", "/")
        config.add_route("whoami", "/whoami")
        config.add_route("login", "/login")
        config.add_route("logout", "/logout")
        config.add_route("report", "/report")
        config.add_view(home, route_name="home", request_method="GET")
        config.add_view(whoami, route_name="whoami", request_method="GET", renderer="json")
        config.add_view(login, route_name="login", request_method="POST")
        config.add_view(logout, route_name="logout", request_method="POST")
        config.add_view(report, route_name="report", request_method="GET")
        return config.make_wsgi_app()
