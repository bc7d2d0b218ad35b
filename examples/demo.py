"""``make demo``: the Pyramid example on http://127.0.0.1:6543 with its sessions in SQL Server.

With ``BEAKER_MSSQL_URL`` set it uses that server; otherwise it starts the SQL Server stand-in with
its data in ``var/demo-standin.json``, so sessions survive a restart of the demo. The tables are
created if needed. Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

import pyramid_app  # noqa: E402  (needs the sys.path entry above)

from beaker_mssql.cli import mask_url  # noqa: E402
from beaker_mssql.testing import SQLServerStandIn  # noqa: E402

DEFAULT_DATA_FILE = ROOT / "var" / "demo-standin.json"


def _serve(app: Any, host: str, port: int) -> None:
    """waitress when installed (a production-grade server), else the standard library's wsgiref."""
    try:
        import waitress
    except ImportError:
        from wsgiref.simple_server import make_server

        with make_server(host, port, app) as httpd:
            httpd.serve_forever()
        return
    waitress.serve(app, host=host, port=port, threads=4, _quiet=True)


def run(url: Optional[str], host: str, port: int, data_file: Path) -> int:
    standin: Optional[SQLServerStandIn] = None
    if url:
        source = "BEAKER_MSSQL_URL"
    else:
        data_file.parent.mkdir(parents=True, exist_ok=True)
        standin = SQLServerStandIn(data_file=str(data_file)).start()
        url = standin.url
        source = f"the SQL Server stand-in, data in {data_file}"
    try:
        settings = pyramid_app.load_settings()
        settings["session.url"] = url
        settings["cache.url"] = url
        settings["session.create_table"] = "true"  # create both tables if needed
        settings["cache.short_term.create_table"] = "true"
        app = pyramid_app.main({}, **settings)
        print(f"database: {mask_url(url)} ({source})", flush=True)
        print(
            f"tables: sessions {settings['session.table']}, cache {settings['cache.short_term.table']}",
            flush=True,
        )
        print(f"serving the Pyramid example on http://{host}:{port}/  (Ctrl-C to stop)", flush=True)
        try:
            _serve(app, host, port)
        except KeyboardInterrupt:
            pass
        print("stopped", flush=True)
    finally:
        if standin is not None:
            standin.close()  # writes the data file: sessions survive the next `make demo`
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6543)
    parser.add_argument(
        "--data-file",
        type=Path,
        default=DEFAULT_DATA_FILE,
        help="the stand-in's data (default var/demo-standin.json)",
    )
    args = parser.parse_args(argv)
    url = os.environ.get("BEAKER_MSSQL_URL", "").strip() or None
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it as cleanly as Ctrl-C
    try:
        return run(url, args.host, args.port, args.data_file)
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # one clear line, never the password
        print(f"demo: {mask_url(' '.join(str(exc).split()) or type(exc).__name__)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
