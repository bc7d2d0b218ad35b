"""Throughput with 1, 4 and 16 client threads through SessionMiddleware, and the pool's wait time.

Each thread owns a session and alternates a modifying and a read-only request (direct WSGI calls with
its cookie). The stand-in runs in a child process. The 16-thread runs mirror
``tests/test_concurrency.py`` (16 x 200 requests with the auto_remove sweeper running every 0.2 s,
plus a run where all 16 threads share one session): errors are counted and every session's final
value is checked.

    python benchmarks/bench_throughput.py
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from typing import Any, Optional

from _common import (
    BatchKinds,
    Client,
    Section,
    StandInProcess,
    machine_info,
    new_table,
    percentile,
    session_app,
)
from beaker.middleware import SessionMiddleware
from beaker.session import Session

from beaker_mssql import namespace as ns_module
from beaker_mssql.namespace import close_all

REQUESTS_PER_THREAD = 200
THREAD_COUNTS = (1, 4, 16)
EXPIRED_ROWS = 3000
COMMAND = "python benchmarks/bench_throughput.py"


def fill_expired(server: StandInProcess, table: str, count: int) -> None:
    values = [f"(N'expired-{i:06d}', N'{{}}', DATEADD(second, -600, GETUTCDATE()))" for i in range(count)]
    for start in range(0, count, 1000):
        server.execute(
            f"INSERT INTO {table} ([sid], [session], [expires]) "
            f"VALUES {', '.join(values[start : start + 1000])}"
        )


class Reports:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, int]] = []
        self.lock = threading.Lock()

    def __call__(self, error: Any, deleted: int) -> None:
        with self.lock:
            self.calls.append((error, deleted))

    def __hash__(self) -> int:
        return id(self)


def one_run(
    server: StandInProcess, threads: int, shared: bool, sweep: bool, pool: Optional[dict[str, Any]] = None
) -> dict[str, Any]:
    close_all()
    table = new_table(server.url, "tp")
    reports = Reports()
    options: dict[str, Any] = {
        "type": "ext:mssql",
        "url": server.url,
        "table": table,
        "data_serializer": "json",
    }
    options.update(pool or {})
    if sweep:
        fill_expired(server, table, EXPIRED_ROWS)
        options.update(
            auto_remove=True,
            auto_remove_interval=0.2,
            auto_remove_batch_size=500,
            auto_remove_callback=reports,
        )
    app = SessionMiddleware(session_app, **options)
    shared_cookie = f"beaker.session.id={uuid.uuid4().hex}" if shared else None
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    sids: dict[int, str] = {}
    ready = threading.Barrier(threads + 1)  # every thread warmed up: the counters are read
    go = threading.Barrier(threads + 1)
    max_connections = [0]
    done = threading.Event()

    def monitor() -> None:
        while not done.wait(0.02):
            max_connections[0] = max(max_connections[0], int(server.stats()["connections_open"]))

    def worker(n: int) -> None:
        client = Client(app, cookie=shared_cookie)
        client.get("/write?warm")  # first request: session created (and, for the pool, logins)
        ready.wait()
        go.wait()
        lat = latencies[n]
        try:
            for i in range(REQUESTS_PER_THREAD):
                t0 = time.perf_counter()
                if i % 2:
                    client.get("/read")
                elif shared:  # one key per thread: no thread's write may erase another's
                    client.get(f"/mine?t{n}={i}")
                else:
                    client.get(f"/write?t{n}-{i}")
                lat.append(time.perf_counter() - t0)
        except BaseException as exc:
            errors.append(exc)
        if client.cookie:
            sids[n] = client.cookie.split("=", 1)[1]

    pool_threads = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool_threads:
        t.start()
    mon = threading.Thread(target=monitor, daemon=True)
    ready.wait()
    before = server.stats()
    if shared:  # name what the contended saves send (the log is off elsewhere: 3200 requests a run)
        server.set_log_sql(True)
        logged = len(server.sql_log())
    go.wait()
    began = time.perf_counter()
    mon.start()
    for t in pool_threads:
        t.join()
    wall = time.perf_counter() - began
    done.set()
    mon.join()
    after = server.stats()
    sent = {key: int(after[key]) - int(before[key]) for key in ("requests", "attentions")}
    kinds: dict[str, float] = {}
    if shared:
        server.set_log_sql(False)
        batches = [b for b in server.sql_log()[logged:] if "DELETE TOP" not in b]  # not the sweeper's
        kinds = BatchKinds(server.url, table).count(batches, per=REQUESTS_PER_THREAD * threads)
    pools = list(ns_module._pools.values())
    pstats = [p.stats() for p in pools]
    all_lat = [x for lst in latencies for x in lst]
    total = len(all_lat)

    verified = 0
    last_i = REQUESTS_PER_THREAD - 2 if REQUESTS_PER_THREAD % 2 == 0 else REQUESTS_PER_THREAD - 1
    if not shared:
        for n, sid in sids.items():
            s = Session(
                {}, id=sid, use_cookies=False, **{k: v for k, v in options.items() if k != "auto_remove"}
            )
            if not s.is_new and s.get("value") == f"t{n}-{last_i}":
                verified += 1
    else:
        s = Session(
            {}, id=sids[0], use_cookies=False, **{k: v for k, v in options.items() if k != "auto_remove"}
        )
        # Every thread's own key holds the last value that thread wrote: no update was lost.
        verified = sum(1 for n in range(threads) if not s.is_new and s.get(f"t{n}") == str(last_i))
    with reports.lock:
        sweeps = list(reports.calls)
    expired_left = int(server.execute(f"SELECT COUNT(*) FROM {table} WHERE [expires] <= GETUTCDATE()")[0][0])
    close_all()
    return {
        "threads": threads,
        "pool": pool or {},
        "shared": shared,
        "sweep": sweep,
        "requests": total,
        "errors": len(errors),
        "first_error": repr(errors[0]) if errors else "",
        "wall_s": wall,
        "rps": total / wall if wall else 0.0,
        "p50_ms": percentile(all_lat, 50) * 1e3,
        "p99_ms": percentile(all_lat, 99) * 1e3,
        "max_ms": max(all_lat) * 1e3 if all_lat else 0.0,
        "pool_waits": sum(int(p["waits"]) for p in pstats),
        "pool_wait_s": sum(float(p["wait_time"]) for p in pstats),
        "pool_timeouts": sum(int(p["timeouts"]) for p in pstats),
        "pool_connects": sum(int(p["connects"]) for p in pstats),
        "pool_bound": (pstats[0]["pool_size"] + pstats[0]["max_overflow"]) if pstats else 0,
        "max_server_connections": max_connections[0],
        "verified": verified,
        "sessions": len(sids) if not shared else 1,
        "exchanges": (sent["requests"] + sent["attentions"]) / total if total else 0.0,
        "attentions": sent["attentions"],
        "kinds": kinds,
        "sweeps": len(sweeps),
        "sweep_errors": sum(1 for e, _ in sweeps if e is not None),
        "swept_rows": sum(d for _, d in sweeps),
        "expired_left": expired_left,
    }


def run() -> Section:
    results: list[dict[str, Any]] = []
    with StandInProcess() as server:
        for threads in THREAD_COUNTS:
            results.append(one_run(server, threads, shared=False, sweep=False))
        results.append(one_run(server, 16, shared=False, sweep=False, pool={"pool_size": 16}))
        results.append(one_run(server, 16, shared=False, sweep=True))
        results.append(one_run(server, 16, shared=True, sweep=True))

    rows = [
        "| threads | pool | sessions | sweeper | requests | req/s | p50 | p99 | max | logins | pool waits "
        "| pool wait total | wait per request | max server connections (bound) | exchanges per request "
        "| attentions | errors |",
        "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        wait_per = r["pool_wait_s"] / r["requests"] * 1e3 if r["requests"] else 0.0
        pool_desc = "size 16" if r["pool"] else "5 + 10"
        rows.append(
            f"| {r['threads']} | {pool_desc} | {'1 shared' if r['shared'] else 'own'} "
            f"| {'on' if r['sweep'] else 'off'} "
            f"| {r['requests']} | {r['rps']:.0f} | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms "
            f"| {r['max_ms']:.1f} ms | {r['pool_connects']} | {r['pool_waits']} | {r['pool_wait_s']:.2f} s "
            f"| {wait_per:.2f} ms "
            f"| {r['max_server_connections']} ({r['pool_bound']}) | {r['exchanges']:.2f} | {r['attentions']} "
            f"| {r['errors']} |"
        )
    checks = []
    for r in results:
        if r["sweep"]:
            kind = "one shared session" if r["shared"] else "distinct sessions"
            held = (
                f"{r['verified']}/{r['threads']} threads' own keys hold the last value the thread wrote "
                "(no lost update)"
                if r["shared"]
                else f"{r['verified']}/{r['sessions']} sessions hold their last written value"
            )
            checks.append(
                f"- 16 x {REQUESTS_PER_THREAD}, {kind}, sweeper every 0.2 s: {r['errors']} errors, "
                f"{held}, "
                + (
                    "per request the store sent "
                    + ", ".join(f"{k} {v:.2f}" for k, v in r["kinds"].items())
                    + " (a refused conditional UPDATE is re-read and merged; a save that keeps "
                    "colliding queues on a per-session app lock, see `MSSQLStore.save`), "
                    if r["kinds"]
                    else ""
                )
                +
                f"{r['sweeps']} sweeps ({r['sweep_errors']} failed) removed {r['swept_rows']} of "
                f"{EXPIRED_ROWS} expired rows ({r['expired_left']} left at the end), "
                f"max {r['max_server_connections']} server connections for a bound of {r['pool_bound']}."
                + (f" First error: {r['first_error']}" if r["errors"] else "")
            )
    default16 = next(r for r in results if r["threads"] == 16 and not r["pool"] and not r["sweep"])
    big16 = next(r for r in results if r["pool"])
    churn = (
        f"Logins: with the default pool (5 + 10 overflow) 16 threads opened {default16['pool_connects']} "
        f"connections for {default16['requests']} requests ({default16['rps']:.0f} req/s); with pool_size 16 "
        f"they opened {big16['pool_connects']} ({big16['rps']:.0f} req/s). "
        + (
            "The pool closes an overflow connection on every release, even while other threads are "
            "about to need it, so above pool_size every request pays for a login."
            if default16["pool_connects"] > 4 * 16
            else "Overflow connections are reused under sustained load."
        )
        + "\n\n"
    )
    body = (
        f"Each thread: one warm-up request, then {REQUESTS_PER_THREAD} requests alternating modify / "
        "read-only "
        "on its own session (or all threads on one shared session, each thread modifying a key of its "
        "own, so overlapping saves conflict and merge). Default pool (pool_size 5, "
        "pool_max_overflow 10). Latency is per WSGI request as seen by the client thread; pool wait is "
        "the total time threads spent waiting for a free connection; logins counts every connection "
        "the pool opened (including the warm-up). Exchanges per request: the stand-in's batches + "
        "attentions during the timed part, divided by its requests (includes the sweeper's DELETE "
        "batches where it runs, and the attention pymssql's connect() sends for each login); 1.5 is a "
        "load per request plus a save per modify, more on a shared session is conflicts being "
        "re-read and merged.\n\n"
        + "\n".join(rows)
        + "\n\n"
        + churn
        + "Full-size concurrency runs (tests/test_concurrency.py asserts the same with the stand-in "
        "in-process):\n\n" + "\n".join(checks) + "\n"
    )
    return Section("Throughput with 1, 4 and 16 threads", COMMAND, body, {"runs": results})


if __name__ == "__main__":
    section = run()
    print(machine_info())
    print(section.markdown())
    sys.exit(0)
