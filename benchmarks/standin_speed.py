"""Round trips per second through pymssql to the SQL Server stand-in (or any server URL).

Measures the two statements a session store sends most, exactly as :mod:`beaker_mssql.sql` builds
them: the primary-key SELECT (get) and the UPDATE-else-INSERT upsert (set), with 1 and 16
connections. By default the stand-in runs in a child process so client and server do not share one
GIL, as in real use.

    python benchmarks/standin_speed.py [--seconds 3] [--repeat 1] [--url mssql://...] [--in-process]

Round trips of one connection wait on each other, so the rate follows the machine's momentary speed
(other load, CPU frequency): with ``--repeat N`` each figure is the median of N runs (min and max shown).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import pymssql

from beaker_mssql.config import parse_settings, parse_table_name
from beaker_mssql.sql import create_table_sql, drop_table_sql, statements_for
from beaker_mssql.testing import SQLServerStandIn


def connect(url: str) -> Any:
    """A pymssql connection opened the way the store's pool opens them (autocommit, UTF-8)."""
    return pymssql.connect(**parse_settings({"url": url}).connection.connect_kwargs())


def run(url: str, threads: int, seconds: float, sql: str, params: list[dict[str, Any]], fetch: bool) -> float:
    """Round trips per second summed over ``threads`` connections, each running for ``seconds``.

    Connection ``n`` sends ``sql`` with ``params[n]`` (pymssql interpolates them, as for the store).
    """
    counts = [0] * threads
    start = threading.Barrier(threads + 1)
    stop_at = [0.0]

    def worker(n: int) -> None:
        conn = connect(url)
        cursor = conn.cursor()
        start.wait()
        i = 0
        while time.perf_counter() < stop_at[0]:
            cursor.execute(sql, params[n])
            if fetch:
                cursor.fetchall()
            i += 1
        counts[n] = i
        conn.close()

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    stop_at[0] = time.perf_counter() + seconds + 0.5  # workers start after the barrier
    start.wait()
    began = time.perf_counter()
    for t in pool:
        t.join()
    return sum(counts) / (time.perf_counter() - began)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=1, help="median of this many runs per figure")
    parser.add_argument("--url", help="benchmark this server instead of a fresh stand-in")
    parser.add_argument("--in-process", action="store_true", help="run the stand-in in this process")
    args = parser.parse_args()

    child = None
    server = None
    url = args.url
    if url is None and args.in_process:
        server = SQLServerStandIn().start()
        url = server.url
    elif url is None:
        code = "from beaker_mssql.testing import run_standin; raise SystemExit(run_standin(port=0))"
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        url = child.stdout.readline().strip()
    try:
        table = parse_table_name(f"bench_{uuid.uuid4().hex[:8]}")
        statements = statements_for(table)
        conn = connect(url)
        cursor = conn.cursor()
        cursor.execute(create_table_sql(table))
        gets = [{"sid": f"s{n}"} for n in range(16)]
        sets = [{"sid": f"s{n}", "data": "x" * 200, "ttl": 3600} for n in range(16)]
        for n in range(16):
            cursor.execute(statements.set, dict(sets[n], data="v" * 200))
        where = "in-process" if server is not None else ("external" if args.url else "child process")
        repeat = max(1, args.repeat)
        median_of = f", median of {repeat}" if repeat > 1 else ""
        print(f"stand-in ({where}), {args.seconds:g} s per run{median_of}")

        def report(label: str, threads: int, sql: str, params: list[dict[str, Any]], fetch: bool) -> None:
            rates = [run(url, threads, args.seconds, sql, params, fetch) for _ in range(repeat)]
            spread = f"   (min {min(rates):.0f}, max {max(rates):.0f})" if repeat > 1 else ""
            rate = statistics.median(rates)
            print(f"  {label:<11} {threads:2d} connection(s): {rate:8.0f} round trips/s{spread}")

        for threads in (1, 16):
            report("PK SELECT", threads, statements.get, gets, True)
            report("upsert", threads, statements.set, sets, False)
        cursor.execute(drop_table_sql(table))
        conn.close()
    finally:
        if server is not None:
            server.close()
        if child is not None:
            child.terminate()
            child.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
