"""The beaker-mssql CLI, run in-process (main(argv)) and as a real subprocess, against the stand-in
(or BEAKER_MSSQL_TEST_URL): connection sources, every command, exit codes, password masking."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pymssql
import pytest

import beaker_mssql
from beaker_mssql import cli
from beaker_mssql.cli import main, mask_url, read_ini_settings
from beaker_mssql.config import TableName, parse_table_name
from beaker_mssql.sql import create_table_sql

ROOT = Path(__file__).resolve().parent.parent


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _no_env_url(monkeypatch):
    """A developer's own BEAKER_MSSQL_URL must not leak into these tests."""
    monkeypatch.delenv(cli.ENV_URL, raising=False)


@pytest.fixture
def new_table(mssql_server):
    """A unique table name that does not exist yet; dropped afterwards."""
    quoted = f"[dbo].[cli_{uuid.uuid4().hex[:10]}]"
    yield quoted
    mssql_server.execute(f"IF OBJECT_ID(N'{quoted}', N'U') IS NOT NULL DROP TABLE {quoted};")


def insert_rows(server, table: str, live: int, expired: int) -> None:
    """Rows written with the database clock, as the package writes them."""
    for i in range(live):
        server.execute(
            f"INSERT INTO {table} ([sid], [session], [expires]) "
            f"VALUES (N'live{i}', N'{{\"n\": {i}}}', DATEADD(second, 3600, GETUTCDATE()))"
        )
    for i in range(expired):
        server.execute(
            f"INSERT INTO {table} ([sid], [session], [expires]) "
            f"VALUES (N'old{i}', N'{{\"n\": {i}}}', DATEADD(second, -60, GETUTCDATE()))"
        )


def sids(server, table: str) -> list[str]:
    return sorted(str(r[0]) for r in server.execute(f"SELECT [sid] FROM {table}"))


def write_ini(tmp_path: Path, url: str, table: str, section: str = "app:main", extra: str = "") -> Path:
    path = tmp_path / "production.ini"
    path.write_text(
        f"[{section}]\n"
        "use = egg:someapp\n"
        "pyramid.includes = pyramid_beaker\n"
        "session.type = ext:mssql\n"
        f"session.url = {url}\n"
        f"session.table = {table}\n"
        "session.secret = 100%-not-interpolated\n"
        "session.timeout = 600\n"
        f"{extra}",
        encoding="utf-8",
    )
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- no server needed -------------------------------------------------------------------------------


def test_version_in_process_and_as_console_script(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"beaker-mssql {beaker_mssql.__version__}"
    proc = subprocess.run(
        [sys.executable, "-m", "beaker_mssql.cli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"beaker-mssql {beaker_mssql.__version__}"
    script = Path(sys.executable).parent / "beaker-mssql"
    if script.exists():  # the console script declared in pyproject.toml
        proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
        assert proc.stdout.strip() == f"beaker-mssql {beaker_mssql.__version__}"


@pytest.mark.parametrize("memory_optimized", [False, True])
def test_dry_run_prints_the_package_ddl_and_connects_to_nothing(capsys, memory_optimized):
    # No URL anywhere: a dry run must not even need one.
    argv = ["create-table", "--dry-run", "--table", "app.web_sessions"]
    if memory_optimized:
        argv.append("--memory-optimized")
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert out == create_table_sql(TableName("app", "web_sessions"), memory_optimized=memory_optimized)
    assert "[app].[web_sessions]" in out


def test_dry_run_default_table_and_ini_table(capsys, tmp_path):
    code, out, _ = run(capsys, "create-table", "--dry-run")
    assert code == 0
    assert out == create_table_sql(TableName("dbo", "sessions"))
    ini = write_ini(tmp_path, "mssql://sa:pw@127.0.0.1:1/db", "[web].[sess]")
    code, out, _ = run(capsys, "--ini", f"{ini}#main", "create-table", "--dry-run")
    assert code == 0
    assert out == create_table_sql(TableName("web", "sess"))
    # --table beats the ini's session.table
    code, out, _ = run(capsys, "create-table", "--dry-run", "--ini", str(ini), "--table", "other")
    assert out == create_table_sql(TableName("dbo", "other"))


def test_mask_url():
    assert mask_url("mssql://sa:p@ss:w0rd@db.example:1433/app") == "mssql://sa:***@db.example:1433/app"
    assert mask_url("failed: mssql://u:x@h/db, retrying") == "failed: mssql://u:***@h/db, retrying"
    assert mask_url("mssql://sa@h/db") == "mssql://sa@h/db"
    assert mask_url("no url here") == "no url here"


def test_read_ini_settings_strips_prefix_keeps_percent_and_expands_here(tmp_path):
    ini = write_ini(
        tmp_path,
        "mssql://sa:pw@h:1433/db",
        "[dbo].[s]",
        section="app:web",
        extra="beaker.session.data_dir = %(here)s/data\nother.key = 1\n",
    )
    settings, label = read_ini_settings(f"{ini}#web")
    assert label == f"{ini} [app:web]"
    assert settings["url"] == "mssql://sa:pw@h:1433/db"
    assert settings["secret"] == "100%-not-interpolated"
    assert settings["data_dir"] == f"{tmp_path}/data"
    assert "other.key" not in settings and "pyramid.includes" not in settings
    # a fragment with a colon names the section verbatim
    settings, label = read_ini_settings(f"{ini}#app:web")
    assert label.endswith("[app:web]")


def test_config_errors_exit_2_with_one_line(capsys, tmp_path):
    code, out, err = run(capsys, "check")
    assert code == 2
    assert err.count("\n") == 1 and "BEAKER_MSSQL_URL" in err and "--url" in err

    code, _, err = run(capsys, "check", "--url", "mssql://sa:pw@127.0.0.1:1/db", "--table", "x;drop table y")
    assert code == 2 and err.count("\n") == 1 and "table" in err

    code, _, err = run(capsys, "check", "--ini", str(tmp_path / "missing.ini"))
    assert code == 2 and "cannot read ini file" in err

    ini = write_ini(tmp_path, "mssql://sa:pw@127.0.0.1:1/db", "s")
    code, _, err = run(capsys, "check", "--ini", f"{ini}#nope")
    assert code == 2 and "[app:nope]" in err and "[app:main]" in err

    code, _, err = run(capsys, "check", "--url", "postgres://sa:Secret-42@h/db")
    assert code == 2 and err.count("\n") == 1
    assert "Secret-42" not in err

    # a bad option value in the ini is a configuration error too
    bad = write_ini(tmp_path, "mssql://sa:pw@h/db", "s", extra="session.pool_size = lots\n")
    code, _, err = run(capsys, "stats", "--ini", str(bad))
    assert code == 2 and "pool_size" in err


def test_argparse_rejects_bad_batch_size():
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "--batch-size", "0", "--url", "mssql://sa:pw@h/db"])
    assert exc.value.code == 2


# -- against the server -----------------------------------------------------------------------------


def test_create_table_then_check_ok(capsys, mssql_server, mssql_url, new_table):
    # The real-server CI job tests in master, which create-table refuses unless told (see test_messages.py).
    told = ["--allow-system-database"] if mssql_server.database.lower() == "master" else []
    code, out, err = run(capsys, "create-table", "--url", mssql_url, "--table", new_table, *told)
    assert code == 0, err
    assert f"{new_table} is ready" in out
    assert mssql_server.password not in out + err
    assert "***" in out  # the target is shown, masked
    # idempotent
    code, _, err = run(capsys, "create-table", "--url", mssql_url, "--table", new_table, *told)
    assert code == 0, err
    code, out, err = run(capsys, "check", "--url", mssql_url, "--table", new_table)
    assert code == 0, out + err
    assert out.startswith("ok: ")


def test_check_missing_table_exits_1(capsys, mssql_url, new_table):
    code, out, _ = run(capsys, "check", "--url", mssql_url, "--table", new_table)
    assert code == 1
    assert f"problem: table {new_table} does not exist" in out


def test_check_names_each_problem(capsys, mssql_server, mssql_url, new_table):
    # Nullable session column, no index on expires: two problems, in words.
    mssql_server.execute(
        f"CREATE TABLE {new_table} ([sid] nvarchar(255) NOT NULL PRIMARY KEY, "
        f"[session] nvarchar(max) NULL, [expires] datetime NOT NULL)"
    )
    code, out, _ = run(capsys, "check", "--url", mssql_url, "--table", new_table)
    assert code == 1
    problems = [line for line in out.splitlines() if line.startswith("problem: ")]
    assert len(problems) == 2, out
    assert any("[session] allows NULL" in p for p in problems)
    assert any("no index on [expires]" in p for p in problems)


def test_sweep_deletes_only_expired_rows(capsys, mssql_server, mssql_url, mssql_table):
    insert_rows(mssql_server, mssql_table, live=2, expired=5)
    code, out, err = run(capsys, "sweep", "--url", mssql_url, "--table", mssql_table, "--batch-size", "2")
    assert code == 0, err
    assert f"deleted 5 expired row(s) from {mssql_table} on " in out
    assert f"(database {mssql_server.database}) in " in out  # the database DB_NAME() reported
    assert sids(mssql_server, mssql_table) == ["live0", "live1"]
    code, out, _ = run(capsys, "sweep", "--url", mssql_url, "--table", mssql_table, "--quiet")
    assert code == 0 and out == ""


def test_sweep_shows_progress_on_a_tty(capsys, monkeypatch, mssql_server, mssql_url, mssql_table):
    insert_rows(mssql_server, mssql_table, live=0, expired=5)
    monkeypatch.setattr(cli, "_isatty", lambda stream: True)
    code, out, err = run(capsys, "sweep", "--url", mssql_url, "--table", mssql_table, "--batch-size", "2")
    assert code == 0
    # the running total after each batch of 2: 2, 4, 5
    assert [part.rsplit(": ", 1)[-1] for part in err.strip().split("\r") if part] == ["2", "4", "5"]
    assert "deleted 5 expired row(s)" in out


def test_stats_text_and_json(capsys, mssql_server, mssql_url, mssql_table, mssql_profile):
    insert_rows(mssql_server, mssql_table, live=3, expired=2)
    code, out, err = run(capsys, "stats", "--json", "--url", mssql_url, "--table", mssql_table)
    assert code == 0, err
    stats = json.loads(out)
    assert stats["live"] == 3 and stats["expired"] == 2
    assert stats["table"] == mssql_table
    per_char = 1 if mssql_profile.datalength_utf8 else 2  # nvarchar: UTF-16 (Babelfish: UTF-8)
    assert stats["data_bytes"] == 5 * per_char * len('{"n": 0}')
    assert stats["oldest_expires"] < stats["server_time"] < stats["newest_expires"]
    code, out, _ = run(capsys, "stats", "--url", mssql_url, "--table", mssql_table)
    assert code == 0
    assert "live rows:" in out and "expired rows (not yet swept):" in out
    assert mssql_server.password not in out


def test_connection_from_env_and_from_ini(
    capsys, monkeypatch, tmp_path, mssql_server, mssql_url, mssql_table
):
    insert_rows(mssql_server, mssql_table, live=1, expired=0)
    monkeypatch.setenv(cli.ENV_URL, mssql_url)
    code, out, err = run(capsys, "stats", "--json", "--table", mssql_table)
    assert code == 0, err
    assert json.loads(out)["live"] == 1
    monkeypatch.delenv(cli.ENV_URL)

    ini = write_ini(tmp_path, mssql_url, mssql_table, extra="session.auto_remove = true\n")
    code, out, err = run(capsys, "--ini", f"{ini}#main", "stats", "--json")
    assert code == 0, err
    assert json.loads(out)["table"] == mssql_table

    # --url beats the ini's session.url (reuse the ini's table with another server)
    broken = write_ini(tmp_path, "mssql://sa:pw@127.0.0.1:1/nowhere?login_timeout=2", mssql_table)
    code, out, err = run(capsys, "stats", "--json", "--ini", str(broken), "--url", mssql_url)
    assert code == 0, err


def test_options_before_or_after_the_command(capsys, mssql_url, mssql_table):
    code1, out1, _ = run(capsys, "--url", mssql_url, "--table", mssql_table, "check")
    code2, out2, _ = run(capsys, "check", "--url", mssql_url, "--table", mssql_table)
    assert code1 == code2 == 0
    assert out1 == out2


def test_wrong_password_is_one_line_without_the_password(capsys, mssql_server, mssql_table):
    secret = "Wr0ng-Secret-" + uuid.uuid4().hex[:6]
    server = mssql_server
    url = f"mssql://{server.user}:{secret}@{server.host}:{server.port}/{server.database}"
    code, out, err = run(capsys, "check", "--url", url, "--table", mssql_table)
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("beaker-mssql: ")
    assert "Traceback" not in err
    assert secret not in out + err

    code, out, err = run(capsys, "check", "--verbose", "--url", url, "--table", mssql_table)
    assert code == 1
    assert "Traceback" in err  # --verbose shows where it failed ...
    assert secret not in out + err  # ... and still never the password


def test_unreachable_server_is_a_runtime_error(capsys):
    port = free_port()  # nothing listens there
    url = f"mssql://sa:Pw-123456@127.0.0.1:{port}/db?login_timeout=2"
    code, out, err = run(capsys, "stats", "--url", url)
    assert code == 1
    assert err.count("\n") == 1 and "Pw-123456" not in err
    assert f"127.0.0.1:{port}" in err


def test_standin_command_serves_until_interrupted(tmp_path):
    port = free_port()
    password = "Cli-Standin-Pw1"
    data = tmp_path / "standin.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "beaker_mssql.cli", "standin", "--port", str(port), "--password", password,
         "--database", "clidb", "--data", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first.endswith(f"@127.0.0.1:{port}/clidb"), first
        conn = pymssql.connect(server="127.0.0.1", port=str(port), user="sa", password=password,
                               database="clidb", login_timeout=10)
        try:
            cur = conn.cursor()
            cur.execute("SELECT 41 + 1")
            assert cur.fetchone()[0] == 42
        finally:
            conn.close()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_standin_port_in_use_is_one_line(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code, _, err = run(capsys, "standin", "--port", str(port), "--password", "Busy-Pw-1")
    assert code == 1
    assert err.count("\n") == 1 and f"127.0.0.1:{port}" in err


def test_console_script_check_against_server(mssql_url, mssql_table):
    """The real entry point, in a subprocess, as cron would run it."""
    env = dict(os.environ, **{cli.ENV_URL: mssql_url})
    proc = subprocess.run(
        [sys.executable, "-m", "beaker_mssql.cli", "check", "--table", mssql_table],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok: ")
    assert parse_table_name(mssql_table).quoted in proc.stdout
