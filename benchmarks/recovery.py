"""Recovery time after SIGKILL: SIGKILL of the worker → its first record after the restore.

``weirflow run`` of ``jobs/keyed_state.py`` (a keyed operator holding
``--state-mb`` MB of random bytes in 1 KiB values) is SIGKILLed once a
checkpoint holding all of that state completed; the supervisor restarts the
worker after ``--restart-delay`` and it restores the checkpoint. Recovery is
the time from the SIGKILL to the worker's first processed record, less that
delay. Three ways, each in its own run:

- the memory backend (the state comes back from its per-key-group blobs);
- RocksDB with incremental checkpoints, restored from the local copy the
  worker kept on its disk (the same host restarts it);
- RocksDB, its local copies deleted after the SIGKILL, so the restore
  downloads the SST files from checkpoint storage.

The memory backend is skipped above ``--memory-max-mb`` (it holds the state
in the Python heap; 4 GB of 1 KiB values do not fit the benchmark machine's
budget next to RocksDB runs). Target (issue 14): 1 GB from the local copy in
≤ 1 s.

Usage: ``python benchmarks/recovery.py [--state-mb 1024 4096] [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from weirflow.testing import children

HERE = Path(__file__).resolve().parent
console = Console()
VALUE_BYTES = 1024
RESTART_DELAY_S = 1.0
COMPLETED = re.compile(r"checkpoint \d+ completed \(\d+ ms, (\d+) bytes\)")


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size so far (VmHWM, MB); NaN once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return float("nan")
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def recovery_time(
    state_bytes: int,
    keys: int,
    backend: str = "memory",
    local_copy: bool = True,
    restart_delay_s: float = 0.0,
    timeout_s: float = 1200,
) -> tuple[float, int, float]:
    """SIGKILL the worker once a checkpoint holds all its state; seconds until it processes again.

    Args:
        state_bytes: keyed state the job builds (bytes), in ``keys`` values.
        keys: distinct keys.
        backend: ``memory`` or ``rocksdb`` (incremental checkpoints, a state dir kept
            across the restart).
        local_copy: (rocksdb) leave the worker's local checkpoint copies in place; ``False``
            deletes them right after the SIGKILL.
        restart_delay_s: the supervisor's restart delay (s), subtracted from the result.
        timeout_s: give up after this long (s).

    Returns:
        ``(recovery seconds, checkpoint bytes, peak RSS MB)``: SIGKILL → first record less
        the restart delay, the bytes of the checkpoint folder when the worker was killed, and
        the largest peak RSS of the killed processes (the worker's).

    Raises:
        SystemExit: the job died, or did not checkpoint or recover within ``timeout_s``.
    """
    with tempfile.TemporaryDirectory() as d:
        log_path = Path(d) / "run.log"
        env = dict(os.environ, WF_STATE_BYTES=str(state_bytes), WF_KEYS=str(keys))
        argv = [
            sys.executable, "-m", "weirflow.cli", "run", str(HERE / "jobs" / "keyed_state.py"),
            f"--checkpoint-dir={d}/chk", "--checkpoint-interval=1s",
            f"--restart-delay={int(restart_delay_s * 1000)}ms",
        ]  # fmt: skip
        if backend == "rocksdb":
            argv += ["--state-backend=rocksdb", f"--state-dir={d}/state"]
        with open(log_path, "wb") as log:
            sup = subprocess.Popen(argv, env=env, stdout=log, stderr=log)
            try:
                deadline = time.monotonic() + timeout_s
                # a checkpoint triggered after the last key's record left the source holds
                # every key: wait for two completions after the job says it built its state
                while True:
                    if time.monotonic() > deadline or sup.poll() is not None:
                        raise SystemExit(f"no full checkpoint: {log_path.read_text()[-2000:]}")
                    time.sleep(0.2)
                    text = log_path.read_text(errors="replace")
                    built = text.find("STATE_BUILT")
                    if built >= 0 and len(COMPLETED.findall(text, built)) >= 2:
                        break
                size = _folder_bytes(Path(d) / "chk")
                workers = children(sup.pid)
                rss = max(map(_peak_rss_mb, workers), default=float("nan"))
                killed_at = time.time()
                for w in workers:
                    os.kill(w, signal.SIGKILL)
                if not local_copy:
                    for copies in (Path(d) / "state").rglob("*.checkpoints"):
                        shutil.rmtree(copies)
                while time.monotonic() < deadline:
                    marks = [
                        float(t) for t in re.findall(r"FIRST_RECORD (\S+)", log_path.read_text())
                    ]
                    after = [t for t in marks if t > killed_at]
                    if after:
                        return after[0] - killed_at - restart_delay_s, size, rss
                    time.sleep(0.05)
                raise SystemExit("the worker did not recover in time")
            finally:
                sup.send_signal(signal.SIGTERM)
                try:
                    sup.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    for w in children(sup.pid):
                        os.kill(w, signal.SIGKILL)
                    sup.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--state-mb", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument(
        "--memory-max-mb", type=int, default=1024, help="largest state run on the memory backend"
    )
    ap.add_argument("--quick", action="store_true", help="64 MB of state only")
    args = ap.parse_args()
    sizes = [64] if args.quick else args.state_mb
    table = Table(title="recovery after SIGKILL (SIGKILL → first record, less the restart delay)")
    for col in ("state", "memory backend", "RocksDB, local copy", "RocksDB, from storage"):
        table.add_column(col, justify="left" if col == "state" else "right")
    for mb in sizes:
        keys = (mb << 20) // VALUE_BYTES
        cells = []
        for backend, local in (("memory", True), ("rocksdb", True), ("rocksdb", False)):
            if backend == "memory" and mb > args.memory_max_mb:
                cells.append("not run")
                continue
            seconds, size, rss = recovery_time(mb << 20, keys, backend, local, RESTART_DELAY_S)
            cells.append(
                f"{seconds:.2f} s ({size / 1e6:,.0f} MB in checkpoint storage, "
                f"worker peak RSS {rss:,.0f} MB)"
            )
            console.print(f"{mb} MB, {backend}, local copy {local}: {cells[-1]}")
        table.add_row(f"{mb:,} MB in {keys:,} keys", *cells)
    console.print(table)


if __name__ == "__main__":
    main()
