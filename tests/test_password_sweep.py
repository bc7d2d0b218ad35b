"""The password sweep (issue 11): every CLI error path, every exception message and every log record of
the scenarios a user meets, with a one-character password, a common word and one holding ``@ # % : /``.

Passwords are masked structurally (the userinfo of a URL, option values, reprs), never by searching the
text for the password: so for ``e`` and ``password``, which occur in ordinary English, the test asserts
the credential positions are masked and that no message is mangled (``***`` only where a URL's password
was); the special-character password must appear nowhere, raw, percent-encoded or in pieces.
"""

from __future__ import annotations

import logging
import re
import socket
import sys
import uuid
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

import pytest

from beaker_mssql import MSSQLStore
from beaker_mssql.cli import main
from beaker_mssql.config import parse_settings
from beaker_mssql.errors import MSSQLStoreError
from beaker_mssql.integrations.pyramid import validate_settings
from beaker_mssql.testing import SQLServerStandIn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

SPECIAL = "p@ss#w%rd:/x"
PASSWORDS = ["e", "password", SPECIAL]
# Where "***" may stand: a URL's password, an option value (password=***), a refused value (got ***).
ALLOWED_MASKS = re.compile(r":\*\*\*@|=\*\*\*|=\s?'\*\*\*'|got \*\*\*|'\*\*\*'")


@pytest.fixture(scope="module", params=PASSWORDS, ids=["one-char", "common-word", "special-chars"])
def server(request):
    standin = SQLServerStandIn(password=request.param).start()
    try:
        yield standin
    finally:
        standin.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def urls(server: SQLServerStandIn) -> dict[str, str]:
    pw = server.password
    enc = quote(pw, safe="")
    base = f"{server.host}:{server.port}"
    return {
        "good": f"mssql://sa:{enc}@{base}/test",
        "raw": f"mssql://sa:{pw}@{base}/test",  # not percent-encoded: refused when pw holds # or @
        "closed": f"mssql://sa:{enc}@127.0.0.1:{closed_port()}/test",
        "no_port": f"mssql://sa:{enc}@127.0.0.1/test",
        "wrong_user": f"mssql://nobody:{enc}@{base}/test",
        "master": f"mssql://sa:{enc}@{base}/master",
    }


def check_text(text: str, password: str, where: str) -> None:
    """No credential of ``password`` in ``text``, and no "***" where none belongs (mangling)."""
    enc = quote(password, safe="")
    for form in {password, enc}:
        for leak in (f":{form}@", f"={form}", f"password={form!r}"):
            assert leak not in text, f"{where}: credential {leak!r} in {text!r}"
    if password == SPECIAL:
        pieces = {SPECIAL, enc, "p@ss", "ss#w", "w%rd", "rd:/x"}
        for piece in pieces:
            assert piece not in text, f"{where}: password piece {piece!r} in {text!r}"
    stray = ALLOWED_MASKS.sub("", text)
    assert "***" not in stray, f"{where}: mangled message {text!r}"


def cli_outputs(server: SQLServerStandIn, tmp_path: Path, capsys: Any) -> list[tuple[str, int, str]]:
    """(what, exit code, stdout + stderr) for every CLI error path."""
    u = urls(server)
    ini_bad = tmp_path / "bad.ini"
    ini_bad.write_text(
        f"[app:main]\nsession.type = ext:mssql\nsession.url = {u['good'].replace('%', '%%')}\n"
        "session.ttl = soon\n",
        encoding="utf-8",
    )
    ini_unknown = tmp_path / "unknown.ini"
    ini_unknown.write_text(
        f"[app:main]\nsession.type = ext:mssql\nsession.url = {u['good'].replace('%', '%%')}\n"
        "session.table = no_such_table\nsession.tll = 60\n",
        encoding="utf-8",
    )
    # Nothing listening: a short retry budget (logins to a closed port are retried within it).
    ini_closed = tmp_path / "closed.ini"
    ini_closed.write_text(
        f"[app:main]\nsession.type = ext:mssql\nsession.url = {u['closed'].replace('%', '%%')}\n"
        "session.retry_budget = 0.2\n",
        encoding="utf-8",
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        busy_port = str(busy.getsockname()[1])
        cases: list[tuple[str, list[str]]] = [
            ("positional url", ["check", u["good"]]),
            ("positional raw url", ["check", u["raw"]]),
            ("misspelt --url", ["check", "--urll", u["good"]]),
            ("url as command", [u["good"], "check"]),
            ("unknown password option", ["check", "--url", u["good"], "--pasword", server.password]),
            ("unknown option with =", ["check", f"--pasword={server.password}"]),
            ("unencoded url", ["check", "--url", u["raw"]]),
            ("nothing listening", ["check", "--ini", f"{ini_closed}#main"]),
            ("nothing listening, verbose", ["stats", "--ini", f"{ini_closed}#main", "--verbose"]),
            ("wrong user", ["check", "--url", u["wrong_user"]]),
            ("wrong user, verbose", ["check", "--url", u["wrong_user"], "-v"]),
            ("missing table", ["check", "--url", u["good"], "--table", "sesions"]),
            ("system database", ["create-table", "--url", u["master"]]),
            ("bad table name", ["check", "--url", u["good"], "--table", "a;drop"]),
            ("bad batch size", ["sweep", "--url", u["good"], "--batch-size", "0"]),
            ("bad ini value", ["check", "--ini", f"{ini_bad}#main"]),
            ("ini unknown key", ["check", "--ini", f"{ini_unknown}#main"]),
            ("stand-in busy port", ["standin", "--port", busy_port, "--password", server.password]),
        ]
        results = []
        for what, argv in cases:
            try:
                code = main(argv)
            except SystemExit as exc:
                code = int(exc.code or 0)
            out, err = capsys.readouterr()
            results.append((what, code, out + err))
    return results


def test_every_cli_error_path(server, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    results = cli_outputs(server, tmp_path, capsys)
    for what, code, text in results:
        assert code != 0, f"{what}: expected a failure, got 0: {text}"
        check_text(text, server.password, what)
    for record in caplog.records:
        check_text(caplog.handler.format(record), server.password, f"log record {record.name}")
    by_name = {what: text for what, _, text in results}
    # Not mangled: the words a short password would have been cut out of are intact.
    assert "does not exist" in by_name["missing table"]
    assert "login to 127.0.0.1:" in by_name["nothing listening"]
    assert "error" in by_name["misspelt --url"] and "did you mean --url?" in by_name["misspelt --url"]
    assert "(value hidden)" in by_name["unknown password option"]
    assert "did you mean 'session.ttl'?" in by_name["ini unknown key"] or any(
        "did you mean 'session.ttl'?" in r.getMessage() for r in caplog.records
    )


def run_library_scenarios(server: SQLServerStandIn) -> list[str]:
    """Every exception text and repr of the library paths a new user meets."""
    import pyramid_app

    u = urls(server)
    texts: list[str] = []

    def attempt(what: str, action: Callable[[], Any]) -> None:
        try:
            result = action()
        except (MSSQLStoreError, ValueError) as exc:
            texts.append(f"{what}: {exc!s} | {exc!r} | {exc.__cause__!s}")
        else:
            texts.append(f"{what}: {result!r}")

    def store_call(url: str, **options: Any) -> Callable[[], Any]:
        def call() -> Any:
            with MSSQLStore(url=url, login_timeout=2, retries=0, retry_budget=0.2, **options) as store:
                texts.append(repr(store) + repr(store.settings) + str(store.settings.connection))
                return store.get("abc")

        return call

    attempt("nothing listening", store_call(u["closed"]))
    attempt("wrong user", store_call(u["wrong_user"]))
    attempt("missing table", store_call(u["good"], table="t_" + uuid.uuid4().hex[:8]))
    attempt("unencoded url", lambda: parse_settings({"url": u["raw"]}))
    attempt("bad ttl", lambda: parse_settings({"url": u["good"], "ttl": "soon"}))
    attempt("password not a string", lambda: parse_settings({"url": u["good"], "password": object()}))
    attempt("unknown option", lambda: parse_settings({"url": u["good"], "tll": "1"}, prefix="session."))
    attempt(
        "pyramid bad value",
        lambda: validate_settings(
            {"session.type": "ext:mssql", "session.url": u["good"], "session.ttl": "1h"}
        ),
    )
    settings = dict(
        pyramid_app.load_settings(),
        **{"session.url": u["closed"], "cache.url": u["closed"], "session.retry_budget": "0.2"},
    )
    attempt("pyramid start-up", lambda: pyramid_app.main({}, **settings))
    return texts


def test_every_exception_message_and_log_record(server, caplog):
    caplog.set_level(logging.DEBUG)
    texts = run_library_scenarios(server)
    assert len(texts) >= 9
    for text in texts:
        check_text(text, server.password, "exception")
    assert caplog.records, "the scenarios log something (at least the unknown option)"
    for record in caplog.records:
        check_text(caplog.handler.format(record), server.password, f"log record {record.name}")
    joined = "\n".join(texts)
    assert "login to 127.0.0.1:" in joined and "Hint:" in joined  # not mangled
    assert "does not exist" in joined
