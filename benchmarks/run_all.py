"""Run every benchmark and rewrite benchmarks/RESULTS.md (``make bench``).

Each benchmark starts its own stand-in in a child process; ``standin_speed.py`` (the stand-in's raw
round-trip rate) runs as a subprocess and its output is included as printed. A benchmark that fails is
reported in RESULTS.md with its error instead of stopping the others; the exit status is then 1.

    python benchmarks/run_all.py [--only roundtrips,conflict,cpu,throughput,sweep,failover,standin]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import traceback
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from _common import REPO_ROOT, Section, machine_info  # noqa: E402

RESULTS = os.path.join(HERE, "RESULTS.md")


def standin_speed() -> Section:
    command = f"{os.path.basename(sys.executable)} benchmarks/standin_speed.py --seconds 2"
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "standin_speed.py"), "--seconds", "2"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"standin_speed.py exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    body = (
        "Raw round trips per second through pymssql (no Beaker, no store): the stand-in's own speed, "
        "which bounds every figure above.\n\n```\n" + proc.stdout.rstrip() + "\n```\n"
    )
    return Section(
        "Stand-in speed (standin_speed.py)",
        command.replace(os.path.basename(sys.executable), "python"),
        body,
        {"stdout": proc.stdout},
    )


def benches() -> dict[str, Callable[[], Section]]:
    import bench_conflict
    import bench_cpu
    import bench_failover
    import bench_roundtrips
    import bench_sweep
    import bench_throughput

    return {
        "roundtrips": bench_roundtrips.run,
        "conflict": bench_conflict.run,
        "cpu": bench_cpu.run,
        "throughput": bench_throughput.run,
        "sweep": bench_sweep.run,
        "failover": bench_failover.run,
        "standin": standin_speed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", help="comma-separated subset (does not rewrite RESULTS.md)")
    parser.add_argument("--output", default=RESULTS, help="where to write the markdown")
    args = parser.parse_args()
    available = benches()
    names = list(available) if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    info = machine_info()
    load_before = os.getloadavg()
    sections: list[str] = []
    failed = 0
    began = time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        print(f"== {name} ...", flush=True)
        try:
            section = available[name]()
            text = section.markdown() + f"\n_Took {time.perf_counter() - t0:.0f} s._\n"
        except Exception:
            failed += 1
            text = f"## {name}: FAILED\n\n```\n{traceback.format_exc()}```\n"
        print(text, flush=True)
        sections.append(text)
    total = time.perf_counter() - began
    header = (
        "# beaker-mssql benchmark results\n\n"
        "Written by `make bench` (`python benchmarks/run_all.py`); every figure below comes from that one "
        "run. The stand-in (the in-process T-SQL engine behind a TDS listener) runs in a child process, "
        "so client CPU and server CPU are separate; absolute numbers describe the stand-in, not SQL "
        "Server, while counts (exchanges = batches + attentions, logins, statements) are what a real "
        "server would see.\n\n"
        "| machine | |\n|---|---|\n"
        f"| date | {info['date']} |\n"
        f"| CPU | {info['cpu']} |\n"
        f"| nproc | {info['nproc']} |\n"
        f"| Python | {info['implementation']} {info['python']} |\n"
        f"| platform | {info['platform']} |\n"
        f"| pymssql / Beaker | {info['pymssql']} / {info['beaker']} |\n"
        f"| total run time | {total:.0f} s |\n"
        f"| load average (1 min) before / after | {load_before[0]:.2f} / {os.getloadavg()[0]:.2f} "
        "(anything above ~0.5 before the run means other processes shared the 2 cores) |\n\n"
    )
    document = header + "\n".join(sections)
    if args.only and args.output == RESULTS:
        print("(--only: RESULTS.md left unchanged)")
    else:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(document)
        print(f"wrote {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
