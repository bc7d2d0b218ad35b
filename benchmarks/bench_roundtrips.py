"""Round trips and logins per Beaker request, counted by the stand-in.

For each kind of request (new session, read-only, modified, delete) the stand-in's counters are reset,
N requests are made through SessionMiddleware (type ext:mssql) and the deltas divided by N. The target:
at most 1 load + 1 save per request and no login once the pool is warm.

    python benchmarks/bench_roundtrips.py
"""

from __future__ import annotations

import re
import sys
from typing import Any, Callable

from _common import Client, Section, StandInProcess, machine_info, new_table, session_app
from beaker.middleware import SessionMiddleware

N = 50
COMMAND = "python benchmarks/bench_roundtrips.py"


def classify(batch: str) -> str:
    text = batch.upper()
    if "SP_GETAPPLOCK" in text:
        return "applock"
    if "BEGIN TRANSACTION" in text and "UPDATE" in text:
        return "save (upsert)"
    if text.lstrip().startswith("SELECT [SESSION]"):
        return "load (SELECT)"
    if text.lstrip().startswith("DELETE FROM"):
        return "delete"
    if text.lstrip().startswith("UPDATE") and "[EXPIRES]" in text:
        return "touch"
    if re.match(r"\s*SET\s", text):
        return "login setup"
    return "other"


def measure(server: StandInProcess, make: Callable[[int], tuple[Client, str]], n: int) -> dict[str, Any]:
    """Prepare n (client, path) pairs, then count what n requests cost at the server."""
    prepared = [make(i) for i in range(n)]
    server.reset_stats()
    for client, path in prepared:
        client.get(path)
    stats = server.stats()
    kinds: dict[str, int] = {}
    for batch in server.sql_log():
        kind = classify(batch)
        kinds[kind] = kinds.get(kind, 0) + 1
    return {
        "requests": stats["requests"] / n,
        "logins": stats["logins"] / n,
        "statements": stats["statements"] / n,
        "kinds": {k: v / n for k, v in sorted(kinds.items())},
    }


def run() -> Section:
    with StandInProcess(log_sql=True) as server:
        table = new_table(server.url, "rt")
        results: dict[str, dict[str, Any]] = {}
        for save_accessed_time in (True, False):
            app = SessionMiddleware(
                session_app,
                type="ext:mssql",
                url=server.url,
                table=table,
                data_serializer="json",
                save_accessed_time=save_accessed_time,
            )
            warm = Client(app)
            for _ in range(10):  # warm-up: the pool logs in once
                warm.get("/write?warm")

            def existing(i: int, app: Any = app) -> Client:
                c = Client(app)
                c.get("/new?seed")
                return c

            suffix = "" if save_accessed_time else " (save_accessed_time=false)"
            if save_accessed_time:
                results["new session" + suffix] = measure(server, lambda i: (Client(app), "/new?x"), N)
                results["modified session" + suffix] = measure(server, lambda i: (existing(i), "/write?y"), N)
                results["delete" + suffix] = measure(server, lambda i: (existing(i), "/delete"), N)
                results["no session use" + suffix] = measure(server, lambda i: (existing(i), "/plain"), N)
            results["read-only" + suffix] = measure(server, lambda i: (existing(i), "/read"), N)

    rows = [
        "| request | round trips | logins | statements | what was sent (per request) |",
        "|---|---:|---:|---:|---|",
    ]
    for name, r in results.items():
        kinds = ", ".join(f"{k} {v:g}" for k, v in r["kinds"].items()) or "nothing"
        rows.append(f"| {name} | {r['requests']:.2f} | {r['logins']:.2f} | {r['statements']:.2f} | {kinds} |")
    worst = max(r["requests"] for r in results.values())
    logins = max(r["logins"] for r in results.values())
    verdict = (
        f"Target (at most 1 load + 1 save, 0 logins after warm-up): "
        f"{'met' if worst <= 2 and logins == 0 else 'NOT met'} "
        f"(worst {worst:.2f} round trips, {logins:.2f} logins per request)."
    )
    delete_kinds = results.get("delete", {}).get("kinds", {})
    if delete_kinds and "delete" not in delete_kinds:
        verdict += (
            " Note on delete: Beaker's `Session.delete()` empties the session and *saves* it, so the row "
            "is overwritten with an empty session rather than removed; it goes when it expires or is swept."
        )
    body = (
        f"{N} requests of each kind through `SessionMiddleware(type='ext:mssql', data_serializer='json')`, "
        "one thread, after a 10-request warm-up; per-request averages of the stand-in's counters "
        "(`requests` = round trips, `statements` = statements the engine ran).\n\n"
        + "\n".join(rows)
        + "\n\n"
        + verdict
        + "\n"
    )
    return Section("Round trips and logins per request", COMMAND, body, results)


if __name__ == "__main__":
    section = run()
    print(machine_info())
    print(section.markdown())
    sys.exit(0)
