"""Errors that say what to do (issue 11): each error path a new user meets, asserting the message's
content (host:port tried, the server's reason once, the hint, the suggested option), through the real
driver against the stand-in (or BEAKER_MSSQL_TEST_URL where noted)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from helpers import wait_until
from test_examples_demo import DEMO, free_port

from beaker_mssql import MSSQLStore
from beaker_mssql.cli import describe_unrecognized, main
from beaker_mssql.config import ConfigurationError, parse_settings
from beaker_mssql.diagnostics import login_failure_message, mask_url, server_reason
from beaker_mssql.errors import ConnectionFailedError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

# What pymssql 2.x / FreeTDS hand over for a wrong password and for nothing listening (copied from runs).
WRONG_PASSWORD_TEXT = (
    "Login failed for user 'sa'.DB-Lib error message 20018, severity 14:\nGeneral SQL Server error: "
    "Check messages from the SQL Server\nDB-Lib error message 20002, severity 9:\nTDS server connection "
    "failed (127.0.0.1)\nDB-Lib error message 20002, severity 9:\nTDS server connection failed (127.0.0.1)\n"
)
REFUSED_TEXT = (
    "DB-Lib error message 20009, severity 9:\nUnable to connect: TDS server is unavailable or does not "
    "exist (127.0.0.1)\nNet-Lib error during Connection refused (111)\nDB-Lib error message 20009, "
    "severity 9:\nUnable to connect: TDS server is unavailable or does not exist (127.0.0.1)\n"
    "Net-Lib error during Connection refused (111)\n"
)


@pytest.fixture(autouse=True)
def _no_env_url(monkeypatch):
    monkeypatch.delenv("BEAKER_MSSQL_URL", raising=False)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def closed_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- masking -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("mssql://sa:e@h:1/db failed", "mssql://sa:***@h:1/db failed"),
        ("at mssql://sa:p@ss#w%rd:/x@h/db, then", "at mssql://sa:***@h/db, then"),
        ("'mssql://u:a/b@h/db'", "'mssql://u:***@h/db'"),
        ("mssql://sa@h/db and mssql://h/db", "mssql://sa@h/db and mssql://h/db"),
        ("two: mssql://a:x@h/1 mssql://b:y@h/2", "two: mssql://a:***@h/1 mssql://b:***@h/2"),
        ("does not exist: error e", "does not exist: error e"),
    ],
)
def test_mask_url_is_structural(text, expected):
    assert mask_url(text) == expected


# -- login failures: one short line --------------------------------------------------------------------


def test_login_failure_message_is_one_short_line_with_reason_once_and_a_hint():
    text = login_failure_message("get", "127.0.0.1", 14330, "sa", "test", 18456, WRONG_PASSWORD_TEXT)
    assert text.startswith("get: login to 127.0.0.1:14330 as sa (database test) failed: ")
    assert text.count("Login failed for user 'sa'") == 1
    assert "DB-Lib" not in text and "\n" not in text
    assert "(error 18456)" in text
    assert "check the user name, the password and the database name" in text
    assert "percent-encode" in text and "%40" in text


def test_login_failure_without_a_port_names_1433_and_asks_whether_the_server_runs():
    text = login_failure_message("get", "db.example", None, "sa", "", 20009, REFUSED_TEXT)
    assert "login to db.example:1433 as sa (the login's default database) failed" in text
    assert text.count("Connection refused (111)") == 1
    assert "is SQL Server running on db.example:1433" in text
    assert server_reason(REFUSED_TEXT) == "Connection refused (111)"


def test_a_temporary_refusal_says_so():
    text = login_failure_message(
        "get", "db.example", 1433, "sa", "app", 40613,
        "Database 'app' on server 'db' is not currently available. Please retry the connection later."
        "DB-Lib error message 20018, severity 17:\n"
        "General SQL Server error: Check messages from the SQL Server\n",
    )
    assert "failed: Database 'app' on server 'db' is not currently available" in text
    assert "(error 40613)" in text and "temporary" in text and "retry_budget" in text
    assert "password" not in text.split("Hint:")[1]  # not sent off to check a password that is fine


def test_named_instance_without_port_says_sql_browser():
    text = login_failure_message("get", "db\\SQLEXPRESS", None, "sa", "app", 20009, REFUSED_TEXT)
    assert "db\\SQLEXPRESS (port from SQL Browser, UDP 1434)" in text


def url_with(server, password: str, port: int = 0) -> str:
    return (
        f"mssql://{server.user}:{quote(password, safe='')}@{server.host}:{port or server.port}/"
        f"{server.database}"
    )


def cli(*argv: str) -> subprocess.CompletedProcess:
    """The CLI in a fresh process: what a user sees (pymssql's per-process login state is fresh too)."""
    env = {k: v for k, v in os.environ.items() if k != "BEAKER_MSSQL_URL"}
    return subprocess.run([sys.executable, "-m", "beaker_mssql.cli", *argv], capture_output=True, text=True,
                          timeout=120, env=env)


def test_store_wrong_password_is_one_line_and_the_driver_text_stays_on_the_cause(mssql_server):
    url = url_with(mssql_server, "Wr0ng-" + uuid.uuid4().hex)
    with MSSQLStore(url=url, login_timeout=2, retries=0) as store:
        with pytest.raises(ConnectionFailedError) as info:
            store.get("abc")
    text = str(info.value)
    assert f"login to {mssql_server.host}:{mssql_server.port} as {mssql_server.user}" in text
    assert "Hint:" in text and "DB-Lib" not in text
    assert "DB-Lib" in str(info.value.__cause__) or "Login failed" in str(info.value.__cause__)


def test_cli_wrong_password_one_line_and_verbose_keeps_the_driver_text(mssql_server):
    wrong = "Wr0ng-" + uuid.uuid4().hex
    url = url_with(mssql_server, wrong)
    proc = cli("check", "--url", url)
    code, err = proc.returncode, proc.stderr
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert f"login to {mssql_server.host}:{mssql_server.port}" in lines[0]
    assert "Login failed" in lines[0] and "Hint:" in lines[0] and "DB-Lib" not in lines[0]
    assert wrong not in err
    proc = cli("check", "--url", url, "--verbose")
    err = proc.stderr
    assert proc.returncode == 1 and "driver said:" in err and "DB-Lib error message" in err
    assert wrong not in err


def test_cli_nothing_listening_names_host_port_and_asks_if_the_server_runs(capsys, tmp_path):
    port = closed_port()
    ini = tmp_path / "app.ini"  # a short retry budget: logins to a closed port are retried within it
    ini.write_text(
        f"[app:main]\nsession.url = mssql://sa:pw@127.0.0.1:{port}/test\nsession.retry_budget = 0.2\n"
    )
    code, _, err = run(capsys, "stats", "--ini", str(ini))
    assert code == 1
    assert f"login to 127.0.0.1:{port} as sa" in err
    assert f"is SQL Server running on 127.0.0.1:{port}" in err
    assert err.count("Connection refused") <= 1


# -- URLs with unencoded characters ------------------------------------------------------------------


@pytest.mark.parametrize(
    "url,char,escape",
    [("mssql://sa:p@ss#word@host/db", "'#'", "%23"), ("mssql://sa:p@ss@host/db", "'@'", "%40")],
)
def test_unencoded_hash_or_at_is_named_with_its_escape_never_the_password(url, char, escape, capsys):
    with pytest.raises(ConfigurationError) as info:
        parse_settings({"url": url})
    assert char in str(info.value) and escape in str(info.value)
    assert "ss#word" not in str(info.value) and "p@ss" not in str(info.value)
    code, _, err = run(capsys, "check", "--url", url)
    assert code == 2 and escape in err and "p@ss" not in err


# -- argparse never echoes credentials ---------------------------------------------------------------


@pytest.mark.parametrize(
    "argv,hint",
    [
        (["check", "mssql://sa:Real-Prod-Pw@127.0.0.1:14330/test"], "a URL goes after --url"),
        (["check", "--urll", "mssql://sa:Real-Prod-Pw@127.0.0.1:14330/test"], "did you mean --url?"),
        (["mssql://sa:Real-Prod-Pw@127.0.0.1:14330/test", "check"], "invalid choice"),
        (["check", "--url", "mssql://sa@h/db", "--pasword", "Real-Prod-Pw"], "(value hidden)"),
        (["check", "--url=mssql://sa@h/db", "--pasword=Real-Prod-Pw"], "--pasword=(value hidden)"),
    ],
)
def test_argparse_errors_never_echo_a_password(argv, hint, capsys):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert "Real-Prod-Pw" not in out + err
    assert hint in err


def test_describe_unrecognized_suggests_the_closest_option():
    text = describe_unrecognized(["--tabel", "x"], {"--table", "--url"})
    assert text == "unrecognized arguments: --tabel (value hidden); did you mean --table?"


# -- the database actually used, and system databases ------------------------------------------------


def test_every_command_prints_the_database_it_used(capsys, mssql_server, mssql_url, mssql_table):
    database = mssql_server.database
    for argv in (["check"], ["stats"], ["sweep"]):
        code, out, err = run(capsys, *argv, "--url", mssql_url, "--table", mssql_table)
        assert code == 0, err
        assert f"(database {database})" in out, (argv, out)
    code, out, _ = run(capsys, "stats", "--json", "--url", mssql_url, "--table", mssql_table)
    assert code == 0 and f'"database": "{database}"' in out


@pytest.mark.standin_only
def test_create_table_refuses_master_unless_told(capsys, standin):
    url = standin.url.rsplit("/", 1)[0] + "/master"
    table = f"[dbo].[cli_{uuid.uuid4().hex[:10]}]"
    code, _, err = run(capsys, "create-table", "--url", url, "--table", table)
    assert code == 2
    assert "refusing to create" in err and "system database master" in err
    assert "--allow-system-database" in err and "/DATABASE" in err
    code, out, err = run(capsys, "create-table", "--url", url, "--table", table, "--allow-system-database")
    assert code == 0, err
    assert "in database master" in out
    conn = standin.connect(database="master")
    try:
        conn.cursor().execute(f"DROP TABLE {table}")
        conn.commit()
    finally:
        conn.close()


def test_check_on_a_missing_table_lists_sessions_tables_and_suggests(capsys, mssql_url, mssql_table):
    misspelt = mssql_table[:-3] + "x]"  # one character off
    code, out, _ = run(capsys, "check", "--url", mssql_url, "--table", misspelt)
    assert code == 1
    assert f"problem: table {misspelt} does not exist" in out
    assert "with sid, session and expires columns:" in out and mssql_table in out
    assert f"did you mean --table {mssql_table}?" in out
    assert f"create-table --table {misspelt}" in out


# -- unknown options ---------------------------------------------------------------------------------


def test_unknown_option_names_the_key_and_suggests_the_closest(caplog):
    caplog.set_level(logging.WARNING)
    parse_settings({"url": "mssql://u:p@h/db", "tll": "60"}, prefix="session.")
    assert "ignoring unknown option 'session.tll'; did you mean 'session.ttl'?" in caplog.text
    caplog.clear()
    parse_settings({"url": "mssql://u:p@h/db", "pool_sise": "3"})
    assert "'pool_sise'" in caplog.text and "did you mean 'pool_size'?" in caplog.text


def test_cli_ini_unknown_option_is_shown(tmp_path, mssql_url, mssql_table):
    ini = tmp_path / "app.ini"
    ini.write_text(
        f"[app:main]\nsession.type = ext:mssql\nsession.url = {mssql_url.replace('%', '%%')}\n"
        f"session.table = {mssql_table}\nsession.tll = 60\n",
        encoding="utf-8",
    )
    proc = cli("stats", "--ini", str(ini))
    err = proc.stderr
    assert proc.returncode == 0, err
    assert "ignoring unknown option 'session.tll'; did you mean 'session.ttl'?" in err


def test_pyramid_include_unknown_option_names_the_ini_key(caplog, mssql_url):
    from beaker_mssql.integrations.pyramid import validate_settings

    caplog.set_level(logging.WARNING)
    validate_settings({"session.type": "ext:mssql", "session.url": mssql_url, "session.tll": "60",
                       "session.secret": "s"})
    assert "'session.tll'; did you mean 'session.ttl'?" in caplog.text


# -- Pyramid start-up --------------------------------------------------------------------------------


def test_pyramid_startup_login_failure_is_one_configuration_error_naming_the_keys(mssql_server):
    import pyramid_app

    wrong = "Wr0ng-" + uuid.uuid4().hex
    url = url_with(mssql_server, wrong)
    settings = dict(pyramid_app.load_settings(), **{"session.url": url, "cache.url": url})
    with pytest.raises(ConfigurationError) as info:
        pyramid_app.main({}, **settings)
    text = str(info.value)
    assert "\n" not in text and wrong not in text
    assert text.startswith("session.create_table = true, but creating [dbo].[sessions] at startup failed")
    assert "check session.url and session.table" in text
    assert f"login to {mssql_server.host}:{mssql_server.port}" in text
    # In-process, pymssql passes the server's reason on for the first failed login only (see README).
    assert "Login failed" in text or "refused the login" in text
    assert info.value.__cause__ is None and info.value.__suppress_context__


# -- the examples' start-up --------------------------------------------------------------------------


def test_demo_busy_port_is_one_line_before_any_banner(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k != "BEAKER_MSSQL_URL"}
        proc = subprocess.run(
            [sys.executable, str(DEMO), "--port", str(port), "--data-file", str(tmp_path / "d.json")],
            capture_output=True, text=True, timeout=120, env=env,
        )
    assert proc.returncode == 1
    assert "serving" not in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in lines[0] and f"--port {port + 1}" in lines[0]


def test_demo_bad_url_is_one_clear_line():
    port = closed_port()
    secret = "Pw-" + uuid.uuid4().hex
    env = dict(os.environ, BEAKER_MSSQL_URL=f"mssql://sa:{secret}@127.0.0.1:{port}/test")
    proc = subprocess.run([sys.executable, str(DEMO), "--port", str(free_port())],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("demo: cannot start with BEAKER_MSSQL_URL: ")
    assert f"127.0.0.1:{port}" in lines[0] and "Line 0 of file None" not in lines[0]
    assert secret not in proc.stdout + proc.stderr


def test_wsgi_example_without_a_url_says_how_to_run_it():
    import wsgi_app

    with pytest.raises(RuntimeError) as info:
        wsgi_app.make_app()
    assert "BEAKER_MSSQL_URL" in str(info.value) and "python examples/wsgi_app.py" in str(info.value)


@pytest.mark.parametrize("example", ["wsgi_app.py", "bottle_app.py"])
def test_examples_run_with_one_command_on_a_stand_in(example, tmp_path):
    """`python examples/<example>` without BEAKER_MSSQL_URL: a stand-in, the table created, a 200."""
    import urllib.request

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "BEAKER_MSSQL_URL"}
    env["PORT"] = str(port)
    # The examples keep the stand-in's data under ROOT/var: run a copy so the test leaves nothing behind.
    work = tmp_path / "examples"
    work.mkdir()
    for name in (example, "_server.py"):
        (work / name).write_text((ROOT / "examples" / name).read_text(encoding="utf-8"), encoding="utf-8")
    proc = subprocess.Popen([sys.executable, str(work / example)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # printed once the stand-in runs
        assert first.startswith("database: mssql://sa:***@127.0.0.1:"), first
        assert "stand-in" in first
        assert wait_until(lambda: _listening(port), timeout=60), "the example never listened"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
            assert response.status == 200
            assert b"visits" in response.read()
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_pserve_with_a_wrong_password_ends_in_one_configuration_error_line(tmp_path, mssql_server):
    """The real `pserve`: start-up fails, and the last line is one ConfigurationError naming the ini keys."""
    pserve = Path(sys.executable).parent / "pserve"
    if not pserve.exists():
        pytest.skip("pserve (pyramid) is not installed in this environment")
    import pyramid_app

    wrong = "Wr0ng-" + uuid.uuid4().hex
    text = Path(pyramid_app.DEFAULT_INI).read_text(encoding="utf-8")
    text = text.replace("mssql://sa:Dev-Only-Passw0rd@127.0.0.1:14330/test", url_with(mssql_server, wrong))
    text = text.replace("listen = 127.0.0.1:6543", f"listen = 127.0.0.1:{free_port()}")
    ini = tmp_path / "development.ini"
    ini.write_text(text, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "examples"))
    proc = subprocess.run([str(pserve), str(ini)], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("beaker_mssql.errors.ConfigurationError: session.create_table = true"), last
    assert "check session.url and session.table" in last
    assert f"login to {mssql_server.host}:{mssql_server.port} as {mssql_server.user}" in last
    assert "Login failed" in last  # a fresh process: pymssql passes the server's reason on
    assert "ConfigurationExecutionError" not in proc.stderr and "Line 0 of file None" not in proc.stderr
    assert wrong not in proc.stdout + proc.stderr
