"""Jobs on a Ray cluster: exact output through lost nodes and killed worker actors.

Ray binds the machine's real interfaces, so every Ray process runs inside a
network namespace this module creates (loopback only) and kills at the end:
each test runs :mod:`ray_scenario` there with ``ip netns exec``, which starts
Ray's multi-node harness (a head and two worker nodes, each a raylet of its
own) and drives ``weirflow run JOB --ray HEAD --workers 2``. The committed
output is then compared with the batch answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chaos_helpers import committed_results, make_input

from weirflow.testing.hosts import can_create_hosts

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(can_create_hosts() is not None, reason=f"{can_create_hosts()}"),
]

HERE = Path(__file__).parent
SRC = HERE.parents[1] / "src"
# Ray's node health checks, fast enough that a removed node is declared dead within ~2 s
# (the default takes ~15 s); a Ray deployment tunes the same settings.
HEALTH_CHECKS = json.dumps(
    {"health_check_period_ms": 500, "health_check_failure_threshold": 3,
     "health_check_timeout_ms": 500}
)  # fmt: skip


class Namespace:
    """A network namespace with only loopback, and what runs in it."""

    def __init__(self) -> None:
        self.name = f"wfray-{uuid.uuid4().hex[:6]}"
        subprocess.run(["ip", "netns", "add", self.name], check=True, timeout=30)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True, timeout=30)

    def scenario(self, work: Path, *args: str, env: dict[str, str]) -> dict[str, Any]:
        """Run ``ray_scenario.py ARGS`` in the namespace; return its JSON report."""
        done = subprocess.run(
            ["ip", "netns", "exec", self.name, sys.executable, str(HERE / "ray_scenario.py"),
             args[0], str(work), *args[1:]],
            env={**os.environ, **env, "PYTHONPATH": f"{SRC}:{HERE}",
                 "WF_RAY_SYSTEM_CONFIG": HEALTH_CHECKS},
            capture_output=True, text=True, timeout=280,
        )  # fmt: skip
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        assert done.returncode == 0 and lines, (
            f"scenario exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        )
        return json.loads(lines[-1])

    def close(self) -> None:
        """SIGKILL every process left in the namespace, then delete it."""
        pids = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True, timeout=30
        ).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)


@pytest.fixture
def namespace() -> Iterator[Namespace]:
    ns = Namespace()
    try:
        yield ns
    finally:
        ns.close()


def _check_exact(log_dir: Path, expected: Any, report: dict[str, Any], work: Path) -> None:
    client = (work / "client.log").read_text(errors="replace")
    assert report["rc"] == 0, f"weirflow run exit {report['rc']}\n{client[-4000:]}"
    got = committed_results(log_dir)
    missing, extra = expected - got, got - expected
    assert not missing and not extra, (
        f"{sum(missing.values())} missing, {sum(extra.values())} extra\n{client[-4000:]}"
    )


def test_windowed_job_on_three_node_ray_cluster_gives_batch_answer(
    namespace: Namespace, tmp_path: Path
) -> None:
    """Scenario: the windowed job with 2 worker actors spread over a head and 2 nodes."""
    expected = make_input(tmp_path / "log", 20_000, seed=21)
    report = namespace.scenario(tmp_path, "run", env={"WF_LOG_DIR": str(tmp_path / "log")})
    _check_exact(tmp_path / "log", expected, report, tmp_path)
    # spread: one worker on each worker node (the head offers no CPU)
    assert len(report["placed_on"]) == 2, report


def test_node_loss_five_times_gives_batch_answer(namespace: Namespace, tmp_path: Path) -> None:
    """Scenario: a node hosting a worker actor is removed 5 times at random moments,
    a fresh node added each time."""
    expected = make_input(tmp_path / "log", 30_000, seed=22)
    report = namespace.scenario(
        tmp_path,
        "node-loss",
        "5",
        env={"WF_LOG_DIR": str(tmp_path / "log"), "WF_THROTTLE_US": "500", "WF_SEED": "22"},
    )
    print(f"node losses: {report['removed']}, recovery (s): {report['recovery_s']}")
    _check_exact(tmp_path / "log", expected, report, tmp_path)
    assert report["removed"] == 5, report


def test_sigkill_of_worker_actor_gives_batch_answer(namespace: Namespace, tmp_path: Path) -> None:
    """Scenario: one worker actor's process is SIGKILLed while the job runs."""
    expected = make_input(tmp_path / "log", 20_000, seed=23)
    report = namespace.scenario(
        tmp_path, "kill-actor", env={"WF_LOG_DIR": str(tmp_path / "log"), "WF_THROTTLE_US": "500"}
    )
    print(f"recovery after SIGKILL (s): {report['recovery_s']}")
    _check_exact(tmp_path / "log", expected, report, tmp_path)
    assert report["recovery_s"] is not None, report


def test_refusals_are_one_line_errors(namespace: Namespace, tmp_path: Path) -> None:
    """Scenario: more slots than free CPUs, an unreachable head, a checkpoint folder the
    nodes do not share."""
    make_input(tmp_path / "log", 100, seed=24)
    report = namespace.scenario(tmp_path, "bad-input", env={"WF_LOG_DIR": str(tmp_path / "log")})
    expect = {
        "too_many_slots": "need 8 CPUs but the Ray cluster has 2 free (of 2)",
        "unreachable": "cannot reach the Ray cluster at 127.0.0.1:1",
        "node_local_folder": "on a multi-node Ray cluster put checkpoints on S3",
    }
    for case, words in expect.items():
        rc, stderr = report[case]["rc"], report[case]["stderr"]
        errors = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
        assert rc == 2 and len(errors) == 1 and words in errors[0], (case, rc, stderr[-3000:])
        assert "Traceback" not in stderr, (case, stderr[-3000:])


def test_ray_missing_says_how_to_install(tmp_path: Path) -> None:
    """Scenario: ``--ray`` where Ray is not installed (its import fails): no Ray starts."""
    make_input(tmp_path / "log", 100, seed=25)
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from weirflow.cli import main\n"
        "sys.argv = ['weirflow', *sys.argv[1:]]\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "run", str(HERE / "jobs" / "windowed_sum.py"),
         "--ray", "auto", "--workers", "2", f"--checkpoint-dir={tmp_path / 'chk'}"],
        env={**os.environ, "WF_LOG_DIR": str(tmp_path / "log")},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "pip install 'weirflow[ray]'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
