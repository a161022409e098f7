"""A chaos harness: run a job under ``weirflow run`` and SIGKILL it at random instants.

The harness starts the supervisor as a real subprocess and, at seeded random
delays, kills either the worker (the supervisor then restarts it from the
latest completed checkpoint) or the supervisor itself (its worker dies with
it; the harness starts a new supervisor with ``--restore latest-or-fresh``,
as an operator would). The seed is in the report so a failure can be replayed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from weirflow.errors import WeirflowError

Target = Literal["worker", "supervisor", "any"]


class ChaosError(WeirflowError):
    """The job under chaos failed or did not finish in time."""


@dataclass(frozen=True)
class ChaosConfig:
    """How to torment a job.

    Attributes:
        kills: SIGKILLs to deliver (fewer if the job finishes first).
        seed: seeds the delays; printed in reports.
        target: ``worker``: every worker process of the supervisor; ``supervisor``:
            the supervisor (the coordinator with ``--workers N``), restarted
            with ``--restore latest-or-fresh``; ``any``: per kill, one of the
            supervisor and its workers, drawn at random (the supervisor with
            probability ``supervisor_share``).
        supervisor_share: see ``any``.
        min_delay_s: shortest wait between a (re)start and the next kill (s).
        max_delay_s: longest such wait (s).
        timeout_s: give up (and kill everything) after this long (s).
    """

    kills: int
    seed: int
    target: Target = "worker"
    supervisor_share: float = 0.25
    min_delay_s: float = 0.4
    max_delay_s: float = 1.5
    timeout_s: float = 300.0


@dataclass
class ChaosReport:
    """What happened.

    Attributes:
        seed: the seed used.
        kills: SIGKILLs delivered.
        supervisor_starts: supervisors started (1 + supervisor kills).
        exit_code: the last supervisor's exit status.
        log: the supervisors' and workers' stderr, concatenated.
        kill_times_s: when each kill happened, seconds after the start.
        supervisor_kills: kills of the supervisor.
        worker_kills: kills of workers.
    """

    seed: int
    kills: int = 0
    supervisor_starts: int = 0
    exit_code: int | None = None
    log: str = ""
    kill_times_s: list[float] = field(default_factory=list)
    supervisor_kills: int = 0
    worker_kills: int = 0

    def describe(self) -> str:
        """One line for assertion messages (includes the seed to replay)."""
        return (
            f"chaos seed={self.seed} kills={self.kills} (workers {self.worker_kills}, "
            f"supervisors {self.supervisor_kills}) supervisor starts={self.supervisor_starts} "
            f"exit={self.exit_code}\n--- log tail ---\n{self.log[-4000:]}"
        )


def children(pid: int) -> list[int]:
    """Return the child process ids of ``pid`` (Linux ``/proc``)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def run_under_chaos(
    job: str,
    run_args: list[str],
    config: ChaosConfig,
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    progressed: Callable[[], bool] | None = None,
    after_last_kill: Callable[[], None] | None = None,
) -> ChaosReport:
    """Run ``weirflow run JOB *run_args`` to completion while killing it.

    Args:
        job: the job spec (``JOB.py[:NAME]``).
        run_args: further ``weirflow run`` options (checkpoint dir, parallelism...).
        config: what to kill and how often.
        log_path: file that receives the processes' stderr.
        env: environment for the supervisor (default: this process's).
        progressed: when given, each kill also waits (polled every 50 ms) until
            it returns ``True``, e.g. until a checkpoint completed since the
            last kill, so that kills land while the job runs, not while it
            starts, however slow the machine.
        after_last_kill: when given, called once right after the last of
            ``config.kills`` kills, e.g. to end a pause that only kept the
            job running while the kills landed.

    Returns:
        The :class:`ChaosReport` of a run whose last supervisor exited 0.

    Raises:
        ChaosError: a supervisor exited non-zero, or the timeout passed.
    """
    rng = random.Random(config.seed)
    report = ChaosReport(seed=config.seed)
    start = time.monotonic()
    deadline = start + config.timeout_s
    cmd = [sys.executable, "-m", "weirflow.cli", "run", job, *run_args]
    with open(log_path, "ab") as log:

        def launch(extra: list[str]) -> subprocess.Popen[bytes]:
            report.supervisor_starts += 1
            return subprocess.Popen(
                [*cmd, *extra], stderr=log, stdout=log, env=dict(env) if env else None
            )

        sup = launch([])
        try:
            while True:
                if report.kills < config.kills:
                    wait_s = rng.uniform(config.min_delay_s, config.max_delay_s)
                else:
                    wait_s = max(0.0, deadline - time.monotonic())
                try:
                    rc = sup.wait(timeout=wait_s)
                except subprocess.TimeoutExpired:
                    rc = None
                if rc is not None:
                    report.exit_code = rc
                    break
                if time.monotonic() >= deadline:
                    raise ChaosError(f"job did not finish within {config.timeout_s} s")
                if progressed is not None:
                    while not progressed() and sup.poll() is None:
                        if time.monotonic() >= deadline:
                            raise ChaosError(f"job made no progress within {config.timeout_s} s")
                        time.sleep(0.05)
                    if sup.poll() is not None:
                        continue  # it ended: the next wait reads its exit status
                workers = children(sup.pid)
                kill_supervisor = config.target == "supervisor" or (
                    config.target == "any" and rng.random() < config.supervisor_share
                )
                if kill_supervisor:
                    os.kill(sup.pid, signal.SIGKILL)
                    sup.wait()
                    sup = launch(["--restore", "latest-or-fresh"])
                    report.supervisor_kills += 1
                else:
                    if not workers:
                        continue
                    victims = workers if config.target == "worker" else [rng.choice(workers)]
                    for w in victims:
                        os.kill(w, signal.SIGKILL)
                    report.worker_kills += 1
                report.kills += 1
                report.kill_times_s.append(round(time.monotonic() - start, 3))
                if report.kills == config.kills and after_last_kill is not None:
                    after_last_kill()
        finally:
            if sup.poll() is None:
                for w in children(sup.pid):
                    os.kill(w, signal.SIGKILL)
                sup.kill()
                sup.wait()
    report.log = log_path.read_text(errors="replace")
    if report.exit_code != 0:
        raise ChaosError(f"supervisor exited with {report.exit_code}: {report.describe()}")
    return report
