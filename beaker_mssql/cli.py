"""``beaker-mssql``: operate the sessions table from a shell or cron with the application's own settings.

Operators should not have to retype (or leak) the connection string the app already has, so the
connection comes from ``--url``, ``--ini FILE#SECTION`` (the Pyramid/PasteDeploy file the app runs
with, ``session.*`` keys) or ``$BEAKER_MSSQL_URL``. Every failure is one line on stderr with a
stable exit code (2: configuration, 1: runtime) so cron and scripts can react; the password is
never printed.
"""

from __future__ import annotations

import argparse
import configparser
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Optional, TextIO

from beaker_mssql import __version__
from beaker_mssql.config import (
    BEAKER_KEYS,
    BEAKER_SESSION_KEYS,
    ConfigurationError,
    Settings,
    TableName,
    parse_settings,
    parse_table_name,
)
from beaker_mssql.diagnostics import MASK, closest, mask_url
from beaker_mssql.errors import ConnectionFailedError
from beaker_mssql.events import masked_logger

if TYPE_CHECKING:
    from beaker_mssql.store import MSSQLStore

__all__ = [
    "ENV_URL",
    "CLIError",
    "build_parser",
    "describe_unrecognized",
    "main",
    "mask_url",
    "read_ini_settings",
]

ENV_URL = "BEAKER_MSSQL_URL"
DEFAULT_TABLE = "[dbo].[sessions]"
EXIT_OK, EXIT_RUNTIME, EXIT_CONFIG = 0, 1, 2
# A sessions table in a system database is almost always a URL without /database (the login's
# default database is usually master): create-table refuses these unless told otherwise.
SYSTEM_DATABASES = frozenset({"master", "model", "msdb", "tempdb"})

# Session options that Beaker itself (or pyramid_beaker) consumes never reach the store: the CLI
# drops them, and Beaker's pass-through keys, instead of letting the store warn about them.
CLI_IGNORED_KEYS = BEAKER_SESSION_KEYS | BEAKER_KEYS

logger = masked_logger("beaker_mssql.cli")


class CLIError(Exception):
    """A failure the CLI reports as one line, with the exit code it maps to."""

    def __init__(self, message: str, code: int = EXIT_RUNTIME) -> None:
        super().__init__(message)
        self.code = code


def describe_target(settings: Settings) -> str:
    """The server as a URL with the password masked: what the operator sees in every message."""
    conn = settings.connection
    who = ""
    if conn.user:
        who = f"{conn.user}:{MASK}@" if conn.password is not None else f"{conn.user}@"
    port = "" if conn.port is None else f":{conn.port}"
    return f"mssql://{who}{conn.server}{port}/{conn.database}"


def read_ini_settings(spec: str) -> tuple[dict[str, str], str]:
    """``development.ini#main`` -> (``session.*`` settings of ``[app:main]``, prefix stripped; label).

    Read with interpolation off (ini values may contain ``%``) but ``%(here)s`` and
    ``%(__file__)s`` are replaced as PasteDeploy does, so a path setting means what it means to
    the app. A fragment containing ``:`` names the section verbatim (``#pipeline:main``).
    """
    path, _, name = spec.partition("#")
    name = name.strip() or "main"
    section = name if ":" in name else f"app:{name}"
    if not path:
        raise CLIError("--ini needs a file name, e.g. --ini development.ini#main", EXIT_CONFIG)
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep key case as written
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle, source=path)
    except OSError as exc:
        raise CLIError(f"cannot read ini file {path}: {exc.strerror or exc}", EXIT_CONFIG) from None
    except configparser.Error as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CLIError(f"cannot parse ini file {path}: {first_line}", EXIT_CONFIG) from None
    if not parser.has_section(section):
        available = ", ".join(f"[{s}]" for s in parser.sections()) or "none"
        raise CLIError(f"ini file {path} has no [{section}] section (sections: {available})", EXIT_CONFIG)
    abspath = os.path.abspath(path)
    here = os.path.dirname(abspath)
    settings: dict[str, str] = {}
    for key, value in parser.items(section):
        for prefix in ("beaker.session.", "session."):
            if key.startswith(prefix):
                text = value.replace("%(here)s", here).replace("%(__file__)s", abspath)
                settings[key[len(prefix) :]] = text.strip()
                break
    return settings, f"{path} [{section}]"


class Context:
    """What every command needs: the resolved options, the table and (lazily) a store."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._store: Optional[MSSQLStore] = None
        self._settings: Optional[Settings] = None
        self._database: Optional[str] = None
        self.source = ""
        self.prefix = ""
        ini: dict[str, str] = {}
        ini_spec: Optional[str] = getattr(args, "ini", None)
        if ini_spec:
            ini, self.source = read_ini_settings(ini_spec)
            self.prefix = "session."  # how the keys are spelt in the file, for warnings
        self.options: dict[str, Any] = {k: v for k, v in ini.items() if k not in CLI_IGNORED_KEYS}
        url: Optional[str] = getattr(args, "url", None)
        if url:
            self.options["url"] = url
            self.source = "--url"
        elif not self.options.get("url") and not self.options.get("server"):
            env_url = os.environ.get(ENV_URL, "").strip()
            if env_url:
                self.options["url"] = env_url
                self.source = f"${ENV_URL}"
        table: Optional[str] = getattr(args, "table", None)
        self.table: TableName = parse_table_name(table or self.options.get("table") or DEFAULT_TABLE)
        self.options["table"] = self.table
        # The CLI does one thing and exits: never start the background sweeper, never create
        # the table behind the operator's back (create-table does that explicitly).
        self.options["auto_remove"] = False
        self.options["create_table"] = False

    @property
    def settings(self) -> Settings:
        """Parsed settings; a missing connection is a configuration error, not a login failure."""
        if self._settings is None:
            if not self.options.get("url") and not self.options.get("server"):
                raise CLIError(
                    f"no database given: use --url URL, --ini FILE#SECTION or set ${ENV_URL}", EXIT_CONFIG
                )
            self._settings = parse_settings(self.options, prefix=self.prefix)
        return self._settings

    @property
    def target(self) -> str:
        """The server as a URL (password masked), plus the database actually used once known."""
        text = describe_target(self.settings)
        if self._database is not None:
            text += f" (database {self._database})"
        return text

    @property
    def store(self) -> MSSQLStore:
        if self._store is None:
            from beaker_mssql.store import MSSQLStore

            self._store = MSSQLStore.from_settings(self.settings)
            logger.info("using %s, table %s (from %s)", self.target, self.table.quoted, self.source)
        return self._store

    def database(self) -> str:
        """``DB_NAME()``: where the login really landed (a URL without /database uses its default)."""
        if self._database is None:
            sql = self.store.statements.database_name
            row = self.store._run("login", lambda cur: _fetchone(cur, sql), prepare=False)
            self._database = "" if row is None or row[0] is None else str(row[0])
        return self._database

    def table_shapes(self) -> list[tuple[TableName, int]]:
        """Every base table of the database with how many of sid/session/expires it has."""
        sql = self.store.statements.table_shapes
        rows = self.store._run("table_shapes", lambda cur: _fetchall(cur, sql), prepare=False)
        return [(TableName(str(r[0]), str(r[1])), int(r[2] or 0)) for r in rows]

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def _fetchone(cur: Any, sql: str) -> Any:
    cur.execute(sql)
    return cur.fetchone()


def _fetchall(cur: Any, sql: str) -> list[Any]:
    cur.execute(sql)
    return list(cur.fetchall())


# -- commands -----------------------------------------------------------------------------------


def cmd_create_table(ctx: Context, out: TextIO) -> int:
    """Idempotent DDL; ``--dry-run`` prints it without connecting (for a DBA to review or run).

    Refuses a system database (master, model, msdb, tempdb) unless ``--allow-system-database``:
    a URL without ``/database`` lands in the login's default database, usually master, and a
    sessions table there is a mistake that is easy to make and tedious to find later.
    """
    memory_optimized = bool(ctx.args.memory_optimized)
    if ctx.args.dry_run:
        from beaker_mssql.sql import create_table_sql

        out.write(create_table_sql(ctx.table, memory_optimized=memory_optimized))
        return EXIT_OK
    database = ctx.database()
    if database.lower() in SYSTEM_DATABASES and not ctx.args.allow_system_database:
        given = ctx.settings.connection.database
        why = (
            f"the URL names database {given}"
            if given
            else "the URL names no database, so the login's default database was used"
        )
        raise CLIError(
            f"refusing to create {ctx.table.quoted} in the system database {database} ({why}): "
            f"put the application's database in the URL (mssql://user:password@host:port/DATABASE), "
            f"or pass --allow-system-database if you really mean {database}",
            EXIT_CONFIG,
        )
    ctx.store.create_table(memory_optimized=memory_optimized)
    kind = "memory-optimized table" if memory_optimized else "table"
    where = describe_target(ctx.settings)
    print(f"{kind} {ctx.table.quoted} is ready in database {database} on {where}", file=out)
    return EXIT_OK


def cmd_check(ctx: Context, out: TextIO) -> int:
    """Exit 0 only when the table is exactly what the package needs, so deploy scripts can gate on it."""
    database = ctx.database()
    problems = ctx.store.check_table()
    if problems:
        for problem in problems:
            print(f"problem: {problem}", file=out)
        if problems == [f"table {ctx.table.quoted} does not exist"]:
            for line in _missing_table_advice(ctx, database):
                print(line, file=out)
        print(f"{ctx.table.quoted} on {ctx.target}: {len(problems)} problem(s)", file=out)
        return EXIT_RUNTIME
    print(f"ok: {ctx.table.quoted} on {ctx.target} has the expected columns and indexes", file=out)
    return EXIT_OK


def _missing_table_advice(ctx: Context, database: str) -> list[str]:
    """For a missing table: the tables that look like sessions tables, a close name, or create-table."""
    shapes = ctx.table_shapes()
    lines: list[str] = []
    sessions_like = [t.quoted for t, n in shapes if n == 3]
    if sessions_like:
        lines.append(
            f"hint: tables in database {database} with sid, session and expires columns: "
            + ", ".join(sessions_like)
        )
    names = {t.quoted: t for t, _ in shapes}
    guess = closest(ctx.table.quoted, names) or closest(ctx.table.name, {t.name for t in names.values()})
    if guess is not None:
        quoted = guess if guess in names else next(q for q, t in names.items() if t.name == guess)
        lines.append(f"hint: did you mean --table {quoted}?")
    lines.append(
        f"hint: or create it: beaker-mssql create-table --table {ctx.table.quoted} "
        "(with the same --url/--ini)"
    )
    return lines


def cmd_sweep(ctx: Context, out: TextIO) -> int:
    """One sweep of expired rows now: for cron, or before a maintenance window."""
    batch_size: Optional[int] = ctx.args.batch_size
    tty = _isatty(sys.stderr) and not ctx.args.quiet
    progress: Optional[Callable[[int], None]] = None
    if tty:

        def progress(deleted: int) -> None:
            sys.stderr.write(f"\rdeleting expired rows from {ctx.table.quoted}: {deleted}")
            sys.stderr.flush()

    ctx.database()
    started = time.monotonic()
    try:
        deleted = ctx.store.destroy_expired(batch_size=batch_size, progress=progress)
    finally:
        if tty:
            sys.stderr.write("\n")
    elapsed = time.monotonic() - started
    if not ctx.args.quiet:
        print(
            f"deleted {deleted} expired row(s) from {ctx.table.quoted} on {ctx.target} in {elapsed:.3f} s",
            file=out,
        )
    return EXIT_OK


def _jsonable(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def cmd_stats(ctx: Context, out: TextIO) -> int:
    """Live/expired counts and sizes: is the sweeper keeping up, how big are sessions."""
    database = ctx.database()
    stats = dict(ctx.store.stats())
    if ctx.args.json:
        payload = {key: _jsonable(value) for key, value in stats.items()}
        payload["table"] = ctx.table.quoted
        payload["database"] = database
        json.dump(payload, out, indent=2, sort_keys=True)
        out.write("\n")
        return EXIT_OK
    labels = [
        ("live", "live rows"),
        ("expired", "expired rows (not yet swept)"),
        ("oldest_expires", "oldest expiry"),
        ("newest_expires", "newest expiry"),
        ("data_bytes", "data size (bytes)"),
        ("server_time", "server time"),
    ]
    print(f"{ctx.table.quoted} on {ctx.target}", file=out)
    shown = set()
    for key, label in labels:
        if key in stats:
            shown.add(key)
            value = stats[key]
            print(f"  {label + ':':<30} {'-' if value is None else _jsonable(value)}", file=out)
    for key in sorted(set(stats) - shown):
        print(f"  {key + ':':<30} {_jsonable(stats[key])}", file=out)
    return EXIT_OK


def cmd_standin(args: argparse.Namespace, out: TextIO) -> int:
    """A stand-in SQL Server for demos and manual testing (not for production data)."""
    try:
        from beaker_mssql.testing.server import run_standin
    except ImportError as exc:  # pragma: no cover - the testing package ships with the wheel
        raise CLIError(f"the stand-in is not available: {exc}") from None
    try:
        result = run_standin(args.host, args.port, args.database, args.user, args.password, args.data,
                             profile=args.profile)
    except KeyboardInterrupt:
        return EXIT_OK
    except OSError as exc:
        raise CLIError(f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}") from None
    return result if isinstance(result, int) else EXIT_OK


# -- parser ---------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, except that no error message ever echoes a URL's credentials.

    argparse quotes argv back ("unrecognized arguments: mssql://sa:secret@..."), so a URL given
    without ``--url`` or after a misspelt option would land on the terminal and in CI logs.
    """

    def parse_args(  # type: ignore[override]
        self, args: Optional[Sequence[str]] = None, namespace: Optional[argparse.Namespace] = None
    ) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(describe_unrecognized(extras, _option_names(self)))
        return parsed

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {mask_url(message)}\n")


def _option_names(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of ``parser`` and its sub-commands (for "did you mean")."""
    names: set[str] = set()
    for action in parser._actions:
        names.update(o for o in action.option_strings if o.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                names |= _option_names(sub)
    return names


def describe_unrecognized(extras: Sequence[str], options: set[str]) -> str:
    """``unrecognized arguments`` without echoing secrets: URLs masked, values of unknown options hidden.

    The value after an unknown option may be a password (``--pasword s3cret``), so it is never shown;
    a stray URL is shown with ``***`` for its password and the hint to put it after ``--url``.
    """
    shown: list[str] = []
    hints: list[str] = []
    after_unknown_option = False
    for token in extras:
        if token.startswith("-") and len(token) > 1:
            name, eq, _ = token.partition("=")
            shown.append(f"{name}=(value hidden)" if eq else name)
            guess = closest(name, options) if name.startswith("--") else None
            if guess:
                hints.append(f"did you mean {guess}?")
            after_unknown_option = not eq
        elif "://" in token:
            shown.append(mask_url(token))
            if not after_unknown_option:
                hints.append("a URL goes after --url: --url 'mssql://user:password@host:port/database'")
            after_unknown_option = False
        elif after_unknown_option:
            shown.append("(value hidden)")
            after_unknown_option = False
        else:
            shown.append(repr(token))
    text = "unrecognized arguments: " + " ".join(shown)
    unique = list(dict.fromkeys(hints))
    return text + ("; " + "; ".join(unique) if unique else "")


def _add_connection_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The same options on the main parser and every sub-command (either place works)."""
    default: Any = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--url",
        default=default,
        help=f"mssql://user:password@host:port/database (default: ${ENV_URL})",
    )
    group.add_argument(
        "--ini",
        metavar="FILE#SECTION",
        default=default,
        help="read session.* settings from a Pyramid ini file, e.g. development.ini#main -> [app:main]",
    )
    group.add_argument(
        "--table",
        default=default,
        help=f"table name (default: the ini's session.table, else {DEFAULT_TABLE})",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default if suppress else False,
        help="log what happens and show tracebacks",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = _Parser(
        prog="beaker-mssql",
        description="Operate the SQL Server table behind Beaker sessions and caches (ext:mssql).",
        epilog=f"Connection: --url, else --ini's session.url, else ${ENV_URL}. "
        "Exit codes: 0 ok, 1 runtime failure (or check found problems), 2 configuration error.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_connection_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        _add_connection_options(cmd, suppress=True)
        return cmd

    create = add("create-table", "create the table and its expires index if missing (idempotent)")
    create.add_argument(
        "--memory-optimized",
        action="store_true",
        help="In-Memory OLTP table, DURABILITY = SCHEMA_ONLY (rows are lost on restart)",
    )
    create.add_argument(
        "--dry-run", action="store_true", help="print the DDL and exit without connecting to anything"
    )
    create.add_argument(
        "--allow-system-database",
        action="store_true",
        help="create the table even in master/model/msdb/tempdb (refused by default: usually a URL "
        "without /database)",
    )
    create.set_defaults(handler=cmd_create_table)

    check = add("check", "verify the table's columns and indexes; exit 0 only when all is right")
    check.set_defaults(handler=cmd_check)

    sweep = add("sweep", "delete expired rows now, in batches (for cron)")
    sweep.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help="rows per DELETE (default: the settings' auto_remove_batch_size, 1000)",
    )
    sweep.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    sweep.set_defaults(handler=cmd_sweep)

    stats = add("stats", "live and expired row counts, expiry range and data size")
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    stats.set_defaults(handler=cmd_stats)

    standin = sub.add_parser(
        "standin",
        help="run a stand-in SQL Server (for demos and tests) until Ctrl-C",
        description="Serve the in-process SQL Server stand-in over TDS until Ctrl-C. "
        "Not for production data.",
    )
    standin.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    standin.add_argument("--port", type=_port, default=14330, help="TCP port (default 14330; 0 = any)")
    standin.add_argument("--database", default="test", help="database name (default test)")
    standin.add_argument("--user", default="sa", help="login name (default sa)")
    standin.add_argument("--password", default=None, help="login password (default: generated, printed)")
    standin.add_argument("--data", metavar="FILE", default=None, help="keep the data in FILE across restarts")
    standin.add_argument(
        "--profile", choices=("sqlserver", "azure", "babelfish"), default=None,
        help="behave like this engine (default: $BEAKER_MSSQL_PROFILE or sqlserver; see "
        "beaker_mssql/testing/README.md)")
    standin.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    standin.set_defaults(handler=None)
    return parser


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``beaker-mssql`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format=("%(levelname)s %(name)s: " if verbose else "beaker-mssql: %(levelname)s: ") + "%(message)s",
        stream=sys.stderr,
    )
    out = sys.stdout
    ctx: Optional[Context] = None
    try:
        if args.command == "standin":
            return cmd_standin(args, out)
        ctx = Context(args)
        code: int = args.handler(ctx, out)
        return code
    except KeyboardInterrupt:
        print("beaker-mssql: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        return _report(exc, verbose, ctx)
    finally:
        if ctx is not None:
            try:
                ctx.close()
            except Exception as exc:  # closing a broken pool must not hide the real error
                logger.debug("closing the store failed: %s", mask_url(str(exc)))


def _report(exc: Exception, verbose: bool, ctx: Optional[Context]) -> int:
    """One line on stderr (with --verbose: the traceback and the driver's full text) and the exit code.

    Text is masked structurally (URL credentials): error messages are built from settings whose
    repr hides the password, and the driver never echoes it.
    """
    if isinstance(exc, CLIError):
        code = exc.code
        message = str(exc)
    elif isinstance(exc, ConfigurationError):
        code = EXIT_CONFIG
        message = f"configuration error: {exc}"
    elif isinstance(exc, ConnectionFailedError) and exc.__cause__ is not None and ctx is not None:
        code = EXIT_RUNTIME
        message = " ".join(str(exc).split())  # already names host:port, the reason and a hint
    else:
        code = EXIT_RUNTIME
        text = " ".join(str(exc).split()) or type(exc).__name__
        where = ""
        if ctx is not None and ctx._settings is not None:
            where = f" ({ctx.target}, table {ctx.table.quoted})"
        message = f"{type(exc).__name__}: {text}{where}"
    if verbose:
        sys.stderr.write(mask_url("".join(traceback.format_exception(type(exc), exc, exc.__traceback__))))
        if exc.__cause__ is not None:
            sys.stderr.write(f"driver said: {mask_url(str(exc.__cause__))}\n")
    print(f"beaker-mssql: {mask_url(message)}", file=sys.stderr)
    return code


if __name__ == "__main__":  # python -m beaker_mssql.cli
    sys.exit(main())
