"""The README's configuration table, DDL and links are checked against the code, so the docs cannot
drift from what the package accepts."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from beaker_mssql import config
from beaker_mssql.config import TableName
from beaker_mssql.sql import create_table_sql

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def config_rows() -> dict[str, list[str]]:
    """Option name -> the table row's cells, from the '## Configuration' section."""
    section = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        for name in re.findall(r"`([a-z_]+)`", cells[0]):
            rows[name] = cells
    return rows


def test_every_option_is_documented_and_nothing_else():
    assert set(config_rows()) == set(config.KNOWN_KEYS)


def test_documented_defaults_match_the_code():
    rows = config_rows()
    defaults = {f.name: f.default for f in dataclasses.fields(config.Settings)}
    defaults.update({f.name: f.default for f in dataclasses.fields(config.ConnectionSettings)})
    checked = 0
    for name, default in defaults.items():
        if name not in rows or default is None or default == "" or callable(default):
            continue  # no default (an empty database means "the login's default database")
        cell = rows[name][2]
        if isinstance(default, bool):
            expected = "`true`" if default else "`false`"
        elif isinstance(default, float) and default.is_integer():
            expected = f"`{int(default)}`"
        elif isinstance(default, (int, float, str)):
            expected = f"`{default}`"
        else:
            continue
        assert expected in cell, f"{name}: README says {cell!r}, code default is {default!r}"
        checked += 1
    assert checked >= 15
    assert "`[dbo].[sessions]`" in rows["table"][2]
    assert str(config.DEFAULT_TTL) in README.split("## Expiry", 1)[1].split("\n## ", 1)[0]


def test_readme_ddl_is_the_package_ddl():
    block = README.split("## The table", 1)[1].split("```sql\n", 1)[1].split("```", 1)[0]
    assert block == create_table_sql(TableName("dbo", "sessions"))


def test_first_screen_shows_make_demo_and_make_test():
    first_screen = "\n".join(README.splitlines()[:12])
    assert "make demo" in first_screen and "make test" in first_screen


def test_relative_links_exist():
    links = re.findall(r"\]\((?!https?://|#)([^)#\s]+)", README)
    assert links
    missing = [link for link in links if not (ROOT / link).exists()]
    assert missing == []


def readme_testing_block() -> str:
    section = README.split("## Testing your own app", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_testing_example_runs_as_written(mssql_url, mssql_table, standin):
    """The README's own test example, executed: its make_app is examples/wsgi_app.py's."""
    import sys

    sys.path.insert(0, str(ROOT / "examples"))
    namespace: dict = {}
    exec(compile(readme_testing_block(), "README.md#testing-your-own-app", "exec"), namespace)
    tests = sorted(name for name in namespace if name.startswith("test_"))
    assert tests == ["test_session_expires_by_the_database_clock", "test_visits_survive_a_restart"]
    namespace["test_visits_survive_a_restart"](mssql_url, mssql_table)
    standin.execute(f"DELETE FROM {mssql_table}")
    namespace["test_session_expires_by_the_database_clock"](standin, mssql_table)


def test_readme_first_screen_says_where_the_suite_has_run():
    first_screen = "\n".join(README.splitlines()[:25])
    assert "stand-in" in first_screen and "not yet run" in first_screen
    assert "docs/demo.png" in first_screen


def test_readme_install_lists_the_extras_that_exist():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    for extra in re.findall(r"pip install 'beaker-mssql\[(\w+)\]'", README):
        assert re.search(rf"^{extra} = \[", pyproject, re.MULTILINE), extra
    assert "beaker-mssql[pyramid]" in README and "beaker-mssql[testing]" in README
