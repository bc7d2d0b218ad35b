"""Sweeping 100,000 expired rows next to 1,000 live ones, with a reader running during the sweep.

Rows are loaded with multi-row ``INSERT ... VALUES`` batches of 1,000 through pymssql. The sweep is
``MSSQLStore.destroy_expired()`` (``DELETE TOP (1000) ... WHERE [expires] <= NOW`` until a batch comes
back short); its progress callback timestamps every batch. Meanwhile a second store (its own pool, as
another worker would have) reads live sessions in a loop and times every ``get()``. The question: does
a reader ever wait longer than one batch takes?

    python benchmarks/bench_sweep.py
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from typing import Any
from urllib.parse import unquote, urlsplit

import pymssql
from _common import Section, StandInProcess, machine_info, new_table, percentile

from beaker_mssql.store import MSSQLStore

EXPIRED = 100_000
LIVE = 1_000
BATCH = 1_000
COMMAND = "python benchmarks/bench_sweep.py"


def load_rows(url: str, table: str) -> float:
    parts = urlsplit(url)
    conn = pymssql.connect(
        server=parts.hostname,
        port=str(parts.port),
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        database=parts.path.lstrip("/"),
        autocommit=True,
    )
    cursor = conn.cursor()
    began = time.perf_counter()
    payload = "x" * 100

    def insert(prefix: str, start: int, count: int, seconds: int) -> None:
        values = ", ".join(
            f"(N'{prefix}{i:07d}', N'{payload}', DATEADD(second, {seconds}, GETUTCDATE()))"
            for i in range(start, start + count)
        )
        cursor.execute(f"INSERT INTO {table} ([sid], [session], [expires]) VALUES {values}")

    for start in range(0, EXPIRED, 1000):
        insert("expired-", start, min(1000, EXPIRED - start), -3600)
    for start in range(0, LIVE, 1000):
        insert("live-", start, min(1000, LIVE - start), 3600)
    conn.close()
    return time.perf_counter() - began


def run() -> Section:
    with StandInProcess() as server:
        table = new_table(server.url, "sweep")
        load_s = load_rows(server.url, table)
        # The stand-in is Python: a full collection walks every stored row and stops all its threads for
        # a few hundred ms, which would show up as "lock waits". Freeze what was loaded (gc.freeze) so
        # the figures below show the sweep's batching; collections are still counted and timed.
        frozen = server.gc_freeze()
        sweeper = MSSQLStore(url=server.url, table=table, auto_remove_batch_size=BATCH)
        reader = MSSQLStore(url=server.url, table=table)
        sweeper.length()
        reader.get("live-0000000")  # both pools warm
        stop = threading.Event()
        gets: list[tuple[float, float]] = []  # (start, duration)
        misses = [0]

        def read_loop() -> None:
            i = 0
            while not stop.is_set():
                sid = f"live-{i % LIVE:07d}"
                t0 = time.perf_counter()
                value = reader.get(sid)
                gets.append((t0, time.perf_counter() - t0))
                if value is None:
                    misses[0] += 1
                i += 1

        # Reader latency without a sweep, for reference.
        thread = threading.Thread(target=read_loop, daemon=True)
        thread.start()
        time.sleep(0.5)
        stop.set()
        thread.join()
        idle = [d for _, d in gets]
        gets.clear()
        misses[0] = 0

        stop.clear()
        thread = threading.Thread(target=read_loop, daemon=True)
        server.reset_stats()
        server.gc_watch()
        marks: list[float] = []
        thread.start()
        time.sleep(0.2)
        began = time.perf_counter()
        marks.append(began)
        deleted = sweeper.destroy_expired(progress=lambda total: marks.append(time.perf_counter()))
        ended = time.perf_counter()
        time.sleep(0.2)
        stop.set()
        thread.join()
        stats = server.stats()
        gc_report = server.gc_report()
        live_after = sweeper.length()
        left = int(server.execute(f"SELECT COUNT(*) FROM {table}")[0][0])
        sweeper.close()
        reader.close()

    batches = len(marks) - 1
    durations = [b - a for a, b in zip(marks, marks[1:])]
    during = [d for t0, d in gets if began <= t0 <= ended]
    mean_batch = statistics.mean(durations)
    longest_get = max(during) if during else float("nan")
    # How many batch ends fell inside one get(): 0 or 1 means the reader waited for at most the batch
    # that was running when it arrived; more means later batches overtook it.
    crossed = [sum(1 for m in marks[1:] if t0 <= m <= t0 + d) for t0, d in gets if began <= t0 <= ended]
    max_crossed = max(crossed) if crossed else 0
    figures: dict[str, Any] = {
        "load_s": load_s,
        "gc_frozen_objects": frozen,
        "deleted": deleted,
        "batches": batches,
        "requests": stats["requests"],
        "statements": stats["statements"],
        "sweep_s": ended - began,
        "rows_per_s": deleted / (ended - began),
        "mean_batch_ms": mean_batch * 1e3,
        "max_batch_ms": max(durations) * 1e3,
        "gets_during": len(during),
        "get_mean_ms": statistics.mean(during) * 1e3 if during else float("nan"),
        "get_p99_ms": percentile(during, 99) * 1e3,
        "get_max_ms": longest_get * 1e3,
        "idle_get_mean_ms": statistics.mean(idle) * 1e3 if idle else float("nan"),
        "idle_get_max_ms": max(idle) * 1e3 if idle else float("nan"),
        "misses": misses[0],
        "standin_gc": gc_report,
        "max_batches_overlapped_by_one_get": max_crossed,
        "live_after": live_after,
        "rows_left": left,
    }
    holds = longest_get < mean_batch
    first = statistics.mean(durations[:10])
    last = statistics.mean(durations[-11:-1]) if len(durations) > 11 else first
    growth = (
        f"Batch time falls as the table empties (first 10 batches {first * 1e3:.1f} ms on average, last 10 "
        f"{last * 1e3:.1f} ms): the stand-in's DELETE TOP costs more the more expired rows remain.\n"
        if first > 2 * last
        else ""
    )
    body = (
        f"{EXPIRED:,} expired + {LIVE:,} live rows (100-character payloads), loaded in "
        f"{load_s:.1f} s with 1,000-row INSERT VALUES batches through pymssql. "
        f"`destroy_expired()` with batch size {BATCH:,}; a reader thread with its own pool calls "
        "`get()` on live sessions in a loop during the sweep. After loading, the stand-in process froze "
        f"its {frozen:,} objects (`gc.freeze()`) so that garbage-collector pauses over the loaded table "
        "are not mistaken for lock waits; collections during the sweep are still counted and timed.\n\n"
        "| figure | value |\n|---|---:|\n"
        f"| rows deleted | {deleted:,} |\n"
        f"| DELETE batches | {batches} |\n"
        "| round trips / statements at the server (sweep + reader) "
        f"| {stats['requests']:,} / {stats['statements']:,} |\n"
        f"| sweep time | {ended - began:.2f} s ({figures['rows_per_s']:,.0f} rows/s) |\n"
        f"| mean / longest batch | {figures['mean_batch_ms']:.1f} ms / {figures['max_batch_ms']:.1f} ms |\n"
        "| three longest batches (batch number: ms) | "
        + ", ".join(
            f"#{i + 1}: {durations[i] * 1e3:.0f}"
            for i in sorted(range(batches), key=lambda i: -durations[i])[:3]
        )
        + " |\n"
        f"| first 3 / last 3 batches | {', '.join(f'{d * 1e3:.0f}' for d in durations[:3])} ms / "
        f"{', '.join(f'{d * 1e3:.0f}' for d in durations[-3:])} ms |\n"
        f"| reader get() calls during the sweep | {len(during):,} ({misses[0]} returned None) |\n"
        f"| reader get() mean / p99 / longest during the sweep | {figures['get_mean_ms']:.2f} ms / "
        f"{figures['get_p99_ms']:.2f} ms / {figures['get_max_ms']:.2f} ms |\n"
        f"| reader get() mean / longest with no sweep | {figures['idle_get_mean_ms']:.2f} ms / "
        f"{figures['idle_get_max_ms']:.2f} ms |\n"
        f"| most batch ends inside a single get() | {max_crossed} |\n"
        f"| stand-in garbage collections during the sweep: count / longest pause | "
        f"{int(gc_report['collections'])} / {gc_report['max_pause_ms']:.1f} ms |\n"
        f"| live rows after / rows left | {live_after:,} / {left:,} |\n\n"
        f"**Longest reader get() during the sweep vs mean batch: {figures['get_max_ms']:.1f} ms vs "
        f"{figures['mean_batch_ms']:.1f} ms -- target (below one mean batch) "
        f"{'met' if holds else 'NOT met'}.** "
        + (
            f"It matches the longest batch ({figures['max_batch_ms']:.1f} ms): the reader waited for the one "
            "batch in progress, never for the whole sweep. "
            if longest_get <= max(durations) * 1.1
            else f"It exceeds the longest batch ({figures['max_batch_ms']:.1f} ms): the reader waited for "
            "more than one batch. "
        )
        + "The stand-in runs one statement at a time (one engine-wide mutex), so a reader that arrives "
        "while a DELETE batch runs waits for the rest of that batch, and a slow batch delays it by as "
        "much; on SQL Server the "
        "reader's primary-key seek locks one live row that the batch (seeking the expires index, at most "
        "1,000 row locks, below lock escalation) never touches. (Earlier runs had three ~100 ms batches, "
        "#51, #76 and #89: the stand-in rebuilt its expires index after a half, three quarters and seven "
        "eighths of the rows were gone; it now drops the swept entries at the front of the index "
        "instead.)\n"
        + growth
    )
    return Section("Sweep of 100,000 expired rows", COMMAND, body, figures)


if __name__ == "__main__":
    section = run()
    print(machine_info())
    print(section.markdown())
    sys.exit(0)
