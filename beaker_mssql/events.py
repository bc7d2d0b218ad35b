"""Hooks and logging.

Three events, each with an option of the same name (``on_connect`` ...) and a runtime API::

    store.events.on("connect", callback)          # callback(info: dict) after each new login
    store.events.on("error", callback)            # callback(error, method) for any failed operation
    store.events.on("session_error", callback)    # callback(error, method) for failed store methods

A failing callback is logged and otherwise ignored: monitoring must never break a request.
Operational messages go to the ``beaker_mssql`` logger; security-relevant ones (corrupt payloads,
sid case conflicts, refused ids) to ``beaker_mssql.security`` so they can be routed on their own.
Nothing logged here ever contains a password: connection details come from
:meth:`~beaker_mssql.config.ConnectionSettings.describe`, and every package logger carries
:class:`MaskingFilter`, which masks URL credentials in the final text of a record (a driver message
or an exception quoted in a log line could otherwise carry a URL).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Optional

from beaker_mssql.diagnostics import mask_url

__all__ = [
    "EVENT_NAMES",
    "Events",
    "MaskingFilter",
    "logger",
    "masked_logger",
    "security_logger",
    "short_sid",
]


class MaskingFilter(logging.Filter):
    """Replace ``scheme://user:secret@`` by ``scheme://user:***@`` in a record's formatted message.

    Structural, like :func:`~beaker_mssql.diagnostics.mask_url`: the record is rewritten only when
    it holds a URL with credentials, and then only the password part changes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a broken format string: let logging report it as usual
            return True
        masked = mask_url(text)
        if masked != text:
            record.msg, record.args = masked, None
        return True


_FILTER = MaskingFilter()


def masked_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` with :class:`MaskingFilter` attached (once)."""
    log = logging.getLogger(name)
    if _FILTER not in log.filters:
        log.addFilter(_FILTER)
    return log


logger = masked_logger("beaker_mssql")
security_logger = masked_logger("beaker_mssql.security")

EVENT_NAMES = ("connect", "error", "session_error")


def short_sid(sid: str) -> str:
    """How a session id appears in log lines and error messages: its first 8 characters, quoted.

    Enough to correlate lines, never a whole id: a log must not hand out live sessions (and a refused
    id such as ``'<live id> '`` with a trailing space is nearly one).
    """
    return repr(sid[:8] + "..." if len(sid) > 8 else sid)


class Events:
    """A tiny, thread-safe callback registry."""

    def __init__(
        self,
        on_connect: Optional[Callable[..., Any]] = None,
        on_error: Optional[Callable[..., Any]] = None,
        on_session_error: Optional[Callable[..., Any]] = None,
    ) -> None:
        self._lock = threading.Lock()
        self._callbacks: dict[str, list[Callable[..., Any]]] = {name: [] for name in EVENT_NAMES}
        for name, callback in (
            ("connect", on_connect),
            ("error", on_error),
            ("session_error", on_session_error),
        ):
            if callback is not None:
                self.on(name, callback)

    def on(self, event: str, callback: Callable[..., Any]) -> Callable[..., Any]:
        """Register ``callback`` for ``event``; returns it, so it also works as a decorator."""
        if event not in self._callbacks:
            raise ValueError(f"unknown event {event!r}; expected one of {', '.join(EVENT_NAMES)}")
        if not callable(callback):
            raise TypeError(f"callback for {event!r} must be callable, got {callback!r}")
        with self._lock:
            self._callbacks[event].append(callback)
        return callback

    def off(self, event: str, callback: Callable[..., Any]) -> None:
        """Unregister ``callback`` (no error if it was not registered)."""
        with self._lock:
            if callback in self._callbacks.get(event, []):
                self._callbacks[event].remove(callback)

    def emit(self, event: str, *args: Any) -> None:
        """Call every callback of ``event``; exceptions are logged, never raised."""
        with self._lock:
            callbacks = list(self._callbacks[event])
        for callback in callbacks:
            try:
                callback(*args)
            except Exception:
                logger.exception("beaker_mssql: %s callback %r failed", event, callback)
