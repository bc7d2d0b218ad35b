"""Two python-tds behaviours replaced while *our* calls run, and why.

Both are module-level helpers inside python-tds 1.17 that its ``connect()`` looks up at call time. While
a thread of ours is inside :func:`active`, the replacements below answer; any other caller in the
process (and our own calls in other threads) gets python-tds's originals. If a python-tds release
renames a helper, that override is simply not installed (:func:`active` yields False for the login one)
and the tests in tests/test_failover.py and tests/test_clients_python.py say so.

1. **One login attempt per connect.** python-tds retries a failed login by itself until
   ``login_timeout``: refused or reset sockets and every error but a wrong password
   (``pytds.connect`` -> ``utils.exponential_backoff``; first retry after 8 % of the timeout, then
   doubling). Measured against the stand-in refusing logins with 40613 and ``login_timeout = 3``: one
   ``connect()`` took 3.0 s and made 4 attempts, then raised a bare ``TimeoutError``. That hides the
   server's error number from :mod:`beaker_mssql.retry`, outlasts ``retry_budget`` and multiplies the
   pool's rate-limited login probes. Its own ``disable_connect_retry=True`` does not help: it still
   sleeps out the rest of ``login_timeout`` after a fast refusal. Here the attempt runs once, with the
   whole ``login_timeout`` (as pymssql's login does), and its own exception comes through.

2. **The certificate's host-name check.** python-tds 1.17 reads the subjectAltName through pyOpenSSL's
   ``X509.get_extension``, which pyOpenSSL removed (deprecated in 24.3, gone by 26): any certificate
   whose CN is not exactly the host name (Azure SQL's, or one naming an IP address) fails with an
   AttributeError instead of being checked. :func:`validate_host` does the same check on
   cryptography's X.509 API: CN equal to the host (python-tds's rule, kept), else a DNS name of the
   SAN (``*.`` wildcard for the leftmost label only, RFC 6125 6.4.3) or, for an IP address, an
   IPAddress entry of the SAN.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable, Optional, Union

__all__ = ["active", "validate_host"]

_state = threading.local()
_install_lock = threading.Lock()
_originals: dict[str, Callable[..., Any]] = {}


def _ours() -> bool:
    return bool(getattr(_state, "depth", 0))


def _one_attempt(work: Callable[[float], Any], ex_handler: Callable[[Exception], None], max_time_sec: float,
                 first_attempt_time_sec: float, backoff_factor: float = 2) -> Any:
    if _ours():
        return work(max_time_sec)
    return _originals["backoff"](work, ex_handler, max_time_sec, first_attempt_time_sec, backoff_factor)


def _dns_matches(pattern: str, host: str) -> bool:
    pattern = pattern.lower().rstrip(".")
    if pattern == host:
        return True
    if pattern.startswith("*.") and "*" not in pattern[2:]:
        first, dot, rest = host.partition(".")
        return bool(first and dot and rest == pattern[2:])
    return False


def validate_host(cert: Any, name: bytes) -> bool:
    """True if the server certificate (a pyOpenSSL X509) names ``name``: see the module docstring."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    certificate = cert.to_cryptography()
    host = name.decode("ascii").lower().rstrip(".")
    subject = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if host in (str(attribute.value).lower() for attribute in subject):
        return True
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        address: Optional[Union[ipaddress.IPv4Address, ipaddress.IPv6Address]] = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        return address in san.get_values_for_type(x509.IPAddress)
    return any(_dns_matches(pattern, host) for pattern in san.get_values_for_type(x509.DNSName))


def _checked_host(cert: Any, name: bytes) -> bool:
    if _ours():
        return validate_host(cert, name)
    return bool(_originals["validate_host"](cert=cert, name=name))


def _install() -> bool:
    """Put the switches in front of python-tds's helpers (once); False if the login helper is missing."""
    import pytds
    import pytds.tls
    import pytds.utils

    with _install_lock:
        backoff = getattr(pytds.utils, "exponential_backoff", None)
        if backoff is not None and backoff is not _one_attempt:
            _originals["backoff"] = backoff
            pytds.utils.exponential_backoff = _one_attempt
        check = getattr(pytds.tls, "validate_host", None)
        if check is not None and check is not _checked_host:
            _originals["validate_host"] = check
            pytds.tls.validate_host = _checked_host
    return "backoff" in _originals


@contextmanager
def active() -> Iterator[bool]:
    """Our replacements answer in this thread for the duration; yields whether the one-attempt login
    is in place."""
    installed = _install()
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield installed
    finally:
        _state.depth -= 1
