"""Workers launched by Ray against local worker processes: the same jobs, the same machine.

``windowed_count`` and Nexmark q5 run under ``weirflow run JOB --parallelism 2
--workers 2`` twice: with two local worker processes, and with two worker
actors on a Ray cluster (``--ray HEAD``: Ray's multi-node harness, a head and
two worker nodes on this machine). Records travel over weirflow's own
connections in both; Ray only places the workers, so the target is ≥ 0.9×
the local rate.

Ray binds the machine's network interfaces, so the cluster and both runs are
inside a network namespace of their own (loopback only; needs root), and
Ray's costs are shown apart: the cluster's start-up time and memory when
idle, each run's start-up and teardown (start→exit minus the job's own
time: connecting, placing, starting the workers, ending them), and each
run's peak memory in the namespace above the idle cluster. Outputs are
verified as in :mod:`scaling` (exit status 1 when one is wrong).

Usage: python benchmarks/scaling_ray.py [--quick] [--events N] [--nexmark-events N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import scaling  # noqa: E402
from weirflow.testing.hosts import can_create_hosts  # noqa: E402
from weirflow.testing.ray_hosts import RayInNamespace  # noqa: E402

FULL = {"events": 1_000_000, "nexmark": 500_000, "flights": 0, "channel": 0}
QUICK = {"events": 200_000, "nexmark": 100_000, "flights": 0, "channel": 0}
TARGET = 0.9
_PAGE_KB = 4


def namespace_rss_mb(ns: RayInNamespace) -> float:
    """Resident memory of every process in the namespace, MB."""
    total_kb = 0
    for pid in ns.pids():
        try:
            fields = Path(f"/proc/{pid}/statm").read_text().split()
        except OSError:
            continue
        total_kb += int(fields[1]) * _PAGE_KB
    return total_kb / 1024


class PeakRss:
    """Samples :func:`namespace_rss_mb` every 0.5 s while in use; ``peak_mb`` after."""

    def __init__(self, ns: RayInNamespace) -> None:
        self.ns = ns
        self.peak_mb = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.5):
            self.peak_mb = max(self.peak_mb, namespace_rss_mb(self.ns))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


def main(argv: list[str] | None = None) -> int:
    """Run both launchers on both workloads; return 1 when an output check fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs")
    parser.add_argument("--events", type=int, default=None, help="windowed_count events")
    parser.add_argument("--nexmark-events", type=int, default=None)
    args = parser.parse_args(argv)
    why = can_create_hosts()
    if why is not None:
        print(f"this benchmark runs Ray inside a network namespace: {why}", file=sys.stderr)
        return 2
    sizes = dict(QUICK if args.quick else FULL)
    sizes["events"] = args.events or sizes["events"]
    sizes["nexmark"] = args.nexmark_events or sizes["nexmark"]
    console = Console(width=160)
    load = os.getloadavg()
    console.print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    rows, errors = [], []
    started = time.perf_counter()
    with RayInNamespace() as ns, tempfile.TemporaryDirectory(prefix="weirflow-ray-") as tmp:
        cluster_s = time.perf_counter() - started
        time.sleep(2)  # let the nodes settle before measuring them idle
        idle_mb = namespace_rss_mb(ns)
        console.print(f"Ray cluster (head + 2 nodes): up in {cluster_s:.1f} s, {idle_mb:,.0f} MB")
        work = Path(tmp)
        for w in scaling.workloads(work, sizes, console, queries=("q5",), flights=False):
            for launcher in ("local", "ray"):
                run_dir = work / f"{w.name.replace(' ', '-')}-{launcher}"
                # the workers' environment, as scaling.run_job gives it to local workers
                runtime_env = {
                    "working_dir": str(HERE),
                    "env_vars": {**w.env, w.output_env: str(run_dir / "out")},
                }
                extra = (
                    ["--ray", ns.address, "--ray-runtime-env-json", json.dumps(runtime_env)]
                    if launcher == "ray"
                    else []
                )
                with PeakRss(ns) as rss:
                    r = scaling.run_job(w, 2, run_dir, ns.prefix(), extra)
                rows.append((launcher, r, rss.peak_mb - idle_mb))
                errors += [f"{w.name}, {launcher}: {e}" for e in r.errors]
                console.print(
                    f"{w.name}, {launcher}: {r.events / max(r.job_seconds, 1e-9):,.0f} events/s "
                    f"(job), start-up + teardown {r.seconds - r.job_seconds:.1f} s"
                )
    console.print(_table(rows))
    for name in {r.workload for _, r, _ in rows}:
        by = {launcher: r for launcher, r, _ in rows if r.workload == name}
        x = by["local"].job_seconds / by["ray"].job_seconds
        met = "met" if x >= TARGET else "NOT met"
        console.print(f"target {name} on Ray ≥ {TARGET}× local (job time): {met} ({x:.2f}×)")
    load = os.getloadavg()
    console.print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for e in errors:
        console.print(f"[red]check failed:[/red] {e}")
    return 1 if errors else 0


def _table(rows: list[tuple[str, scaling.JobRun, float]]) -> Table:
    t = Table(title="2 workers: local processes vs Ray actors (parallelism 2, 1 s checkpoints)")
    for col in ("workload", "launcher", "events", "events/s (job)", "events/s (start→exit)"):
        t.add_column(col, justify="left" if col in ("workload", "launcher") else "right")
    for col in ("start-up + teardown s", "peak MB above idle Ray", "checkpoints", "output"):
        t.add_column(col, justify="right")
    for launcher, r, rss_mb in rows:
        t.add_row(
            r.workload,
            launcher,
            f"{r.events:,}",
            f"{r.events / r.job_seconds:,.0f}" if r.job_seconds else "-",
            f"{r.events / r.seconds:,.0f}",
            f"{r.seconds - r.job_seconds:.1f}",
            f"{rss_mb:,.0f}",
            str(r.checkpoints),
            "[red]WRONG[/red]" if r.errors else "verified",
        )
    return t


if __name__ == "__main__":
    sys.exit(main())
