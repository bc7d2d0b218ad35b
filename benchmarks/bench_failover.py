"""A 5-second failover under 16 threads x 200 requests (issue 13's acceptance run, measured).

Each thread writes its own session through ``SessionMiddleware(type='ext:mssql')`` with the sweeper
on; a third of the way through, the stand-in fails over (``SQLServerStandIn.failover(5)``: every
connection dropped, logins refused with 40613 for 5 s). Per request: its wall time, and whether the
store retried inside it (the ``on_error`` hook, which fires on every retry, in the request's thread).

The stand-in runs in this process (its ``failover`` is a method of the server object), so the figures
are counts and delays, not CPU.

    python benchmarks/bench_failover.py [--driver pymssql|pytds]
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from typing import Any, Callable

from _common import Client, Section, new_table

from beaker_mssql.errors import MSSQLStoreError
from beaker_mssql.testing import SQLServerStandIn

THREADS, REQUESTS, OUTAGE = 16, 200, 5.0
COMMAND = "python benchmarks/bench_failover.py"

_retried = threading.local()


def _on_error(*_args: Any) -> None:
    _retried.flag = True


def measure(driver: str) -> dict[str, Any]:
    from beaker.middleware import SessionMiddleware

    with SQLServerStandIn() as server:
        table = new_table(server.url, "failover")
        config = {"session.type": "ext:mssql", "session.url": server.url, "session.table": table,
                  "session.driver": driver, "session.data_serializer": "json",
                  "session.auto_remove": "true", "session.auto_remove_interval": "0.5",
                  "session.retry_budget": "3", "session.retries": "3", "session.pool_size": "4",
                  "session.pool_max_overflow": "12", "session.login_timeout": "2",
                  "session.on_error": _on_error}

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
            session = environ["beaker.session"]
            session["n"] = int(environ["QUERY_STRING"])
            session.save()
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]

        wsgi = SessionMiddleware(app, config)
        lock = threading.Lock()
        third = threading.Event()
        done = [0]
        results: list[tuple[float, float, bool, bool]] = []  # start, seconds, ok, retried
        escaped: list[Exception] = []

        def client(n: int) -> None:
            c = Client(wsgi, cookie=f"beaker.session.id={uuid.uuid4().hex}")
            for i in range(1, REQUESTS + 1):
                _retried.flag = False
                began = time.monotonic()
                try:
                    ok = c.get(f"/?{i}") == "ok"
                except MSSQLStoreError:
                    ok = False
                except Exception as exc:  # not a clear store error: the run is invalid, say so below
                    with lock:
                        escaped.append(exc)
                    ok = False
                took = time.monotonic() - began
                with lock:
                    results.append((began, took, ok, bool(_retried.flag)))
                    done[0] += 1
                    if done[0] == THREADS * REQUESTS // 3:
                        third.set()

        workers = [threading.Thread(target=client, args=(n,)) for n in range(THREADS)]
        for w in workers:
            w.start()
        third.wait(300)
        before = server.stats()
        outage_start = time.monotonic()
        server.failover(seconds=OUTAGE)
        outage_end = outage_start + OUTAGE
        # Logins attempted during the outage: read once it is over (stand-in clock = real time here).
        while time.monotonic() < outage_end and any(w.is_alive() for w in workers):
            third.wait(0.05)  # an Event nobody sets: a bounded wait, not a sleep in a test
        during = server.stats()
        for w in workers:
            w.join(600)
        after = server.stats()
    if escaped:
        raise RuntimeError(f"{driver}: {len(escaped)} requests failed with something other than a store "
                           f"error, first: {escaped[0]!r}")
    affected = [r for r in results if r[0] + r[1] >= outage_start and r[0] <= outage_end]
    return {
        "driver": driver,
        "requests": len(results),
        "failed": sum(1 for r in results if not r[2]),
        "delayed": sum(1 for r in results if r[2] and r[3]),
        "longest": max((r[1] for r in affected), default=0.0),
        "normal_p50": sorted(r[1] for r in results if r[0] + r[1] < outage_start)[
            len([r for r in results if r[0] + r[1] < outage_start]) // 2] if results else 0.0,
        "logins_refused": during["login_failures"] - before["login_failures"],
        "logins_ok_after": after["logins"] - during["logins"],
    }


def run(drivers: tuple[str, ...] = ("pymssql", "pytds")) -> Section:
    rows = [measure(d) for d in drivers]
    lines = [
        f"{THREADS} threads x {REQUESTS} requests, each a session write, sweeper on, `retry_budget = 3`, "
        f"`retries = 3`, `login_timeout = 2`; a {OUTAGE:g}-second failover (40613) a third of the way in.",
        "*Delayed*: succeeded after at least one retry (`on_error` fired in its thread). *Longest delay*: "
        "the slowest request overlapping the outage. *Logins during the failover*: login attempts the "
        "stand-in refused while it was down (no retry storm: compare with threads x outage / backoff).",
        "",
        "| driver | requests | failed | delayed | longest delay | median request before | "
        "logins during the failover | logins after it |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['driver']} | {r['requests']} | {r['failed']} | {r['delayed']} | {r['longest']:.2f} s | "
            f"{r['normal_p50'] * 1000:.1f} ms | {r['logins_refused']} | {r['logins_ok_after']} |"
        )
    return Section("Failover (bench_failover.py)", COMMAND, "\n".join(lines) + "\n", {"rows": rows})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--driver", choices=("pymssql", "pytds"), action="append")
    args = parser.parse_args()
    print(run(tuple(args.driver) if args.driver else ("pymssql", "pytds")).markdown())
