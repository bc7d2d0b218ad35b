"""Framework glue. ``beaker_mssql.integrations.pyramid`` holds the Pyramid include; this module holds
what every framework needs.

Why :func:`end_session` exists: Beaker's ``session.delete()`` clears the dict and expires the cookie,
but since Beaker 1.12 the emptied session is then *saved* under the same id (it serializes before it
checks for emptiness). The namespace manager turns that save into a DELETE for unencrypted sessions
(:func:`beaker_mssql.payload.is_emptied_session`); an encrypted one cannot be recognised, and its row
would stay until it expires, leaving the id alive. ``end_session`` deletes the row whatever the
serializer, and also moves to a new id (login: no session fixation).
"""

from __future__ import annotations

from typing import Any

__all__ = ["end_session"]


def end_session(session: Any) -> None:
    """Log out for real: delete the session's row now and continue with a new, empty session id.

    Works with Beaker's ``SessionObject`` (``environ['beaker.session']``, Pyramid's
    ``request.session`` under pyramid_beaker) and ``Session``. Nothing is written for the new id
    until the application stores something in it; the browser gets a cookie with the new id.
    """
    # A session that was never loaded has no namespace (and no row): nothing to delete.
    namespace = getattr(session, "namespace", None)
    if namespace is not None:
        namespace.remove()  # ext:mssql: DELETE ... WHERE [sid] = <this id>
    session.invalidate()  # new id, empty dict; the old id is never saved again
