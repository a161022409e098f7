"""Node failures with real hosts: network namespaces for a coordinator and three workers.

h0 runs ``weirflow coordinator`` and the submitting ``weirflow run``; h1 and
h2 run the job's workers (2 slots each, parallelism 4); h3 is a standby
worker. Each test breaks a host while the job runs and then compares the
committed output with the batch answer.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from chaos_helpers import JOB, ThrottleRelease, committed_results, make_input

from weirflow.testing.hosts import Host, TestNetwork, can_create_hosts, write_token

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(can_create_hosts() is not None, reason=f"{can_create_hosts()}"),
]

N = 60_000
PORT = 7000
HEARTBEAT_TIMEOUT_S = 2.0


class Cluster:
    """A coordinator, its workers and one submitted job on a :class:`TestNetwork`."""

    def __init__(self, net: TestNetwork, tmp_path: Path, throttle_us: int) -> None:
        self.net = net
        self.tmp = tmp_path
        self.token = write_token(tmp_path / "token")
        self.log_dir = tmp_path / "log"
        self.expected = make_input(self.log_dir, N, seed=11)
        # the throttle keeps the job running until the host's failure played out; released,
        # the rest of the input runs at full speed
        self.release = ThrottleRelease(tmp_path)
        self.env = dict(
            os.environ,
            **self.release.env,
            WF_LOG_DIR=str(self.log_dir),
            WF_THROTTLE_US=str(throttle_us),
        )
        self.coordinator_host = net.hosts[0]
        self.address = f"{self.coordinator_host.address}:{PORT}"
        self.logs: dict[str, Path] = {}
        self.workers: dict[str, object] = {}

    def _log(self, name: str) -> object:
        path = self.tmp / f"{name}.log"
        self.logs[name] = path
        return path.open("ab")

    def start(self) -> None:
        """Start the coordinator and a worker on every other host."""
        self.net.spawn(
            self.coordinator_host,
            [
                sys.executable, "-m", "weirflow.cli", "coordinator", "--listen", self.address,
                "--token-file", str(self.token),
                "--heartbeat-timeout", f"{int(HEARTBEAT_TIMEOUT_S * 1000)}ms",
                "--worker-wait", "60s",
            ],
            env=self.env,
            log=self._log("coordinator"),  # type: ignore[arg-type]
        )  # fmt: skip
        for host in self.net.hosts[1:]:
            self.start_worker(host)
        self.wait_for("coordinator", r"worker \S+ joined", count=len(self.net.hosts) - 1)

    def start_worker(self, host: Host) -> None:
        """Start a worker with 2 slots on ``host``."""
        self.workers[host.name] = self.net.spawn(
            host,
            [
                sys.executable, "-m", "weirflow.cli", "worker", "--coordinator", self.address,
                "--slots", "2", "--host-address", host.address, "--token-file", str(self.token),
            ],
            env=self.env,
            log=self._log(host.name),  # type: ignore[arg-type]
        )  # fmt: skip

    def submit(self) -> object:
        """Submit the job (from the coordinator's host); return the client process."""
        return self.net.spawn(
            self.coordinator_host,
            [
                sys.executable, "-m", "weirflow.cli", "run", JOB, "--coordinator", self.address,
                "--token-file", str(self.token), "--parallelism", "4",
                "--checkpoint-dir", str(self.tmp / "chk"), "--checkpoint-interval", "200ms",
                "--restart-strategy", "fixed-delay", "--max-restarts", "20",
                "--restart-delay", "200ms",
            ],
            env=self.env,
            log=self._log("client"),  # type: ignore[arg-type]
        )  # fmt: skip

    def text(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace")

    def wait_for(self, name: str, pattern: str, timeout_s: float = 90.0, count: int = 1) -> None:
        """Wait until ``pattern`` occurs ``count`` times in process ``name``'s log."""
        deadline = time.monotonic() + timeout_s
        while len(re.findall(pattern, self.text(name))) < count:
            assert time.monotonic() < deadline, (
                f"{pattern!r} not seen in {name}'s log:\n{self.text(name)[-3000:]}\n"
                f"coordinator:\n{self.text('coordinator')[-3000:]}"
            )
            time.sleep(0.1)

    def finish(self, client: object) -> str:
        """Wait for the client to exit 0 and check the committed output."""
        rc = client.wait(timeout=240)  # type: ignore[attr-defined]
        log = self.text("client")
        assert rc == 0, f"client exit {rc}\n{log[-3000:]}\n{self.text('coordinator')[-3000:]}"
        got = committed_results(self.log_dir)
        missing, extra = self.expected - got, got - self.expected
        assert not missing and not extra, (
            f"{sum(missing.values())} missing, {sum(extra.values())} extra\n{log[-2000:]}\n"
            f"{self.text('coordinator')[-3000:]}"
        )
        return log


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with TestNetwork(4) as net:
        yield Cluster(net, tmp_path, throttle_us=150)


def _host_of_subtasks(c: Cluster) -> Host:
    """A worker host that runs subtasks of the running attempt (not the standby)."""
    c.wait_for("client", r"checkpoint \d+ completed", count=2)
    for host in c.net.hosts[1:]:
        # a deployed worker logs nothing on success; the standby never connects data links:
        # ask the kernel which hosts hold established connections to peers
        if _has_peer_connections(c.net, host):
            return host
    raise AssertionError("no worker host holds data connections")


def _has_peer_connections(net: TestNetwork, host: Host) -> bool:
    out = subprocess.run(
        ["ip", "netns", "exec", host.namespace, "ss", "-Htn", "state", "established"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    peers = {line.split()[-1].rsplit(":", 1)[0] for line in out.splitlines() if line.strip()}
    others = {h.address for h in net.hosts[1:] if h != host}
    return bool(peers & others)


def test_a_killed_worker_host_is_replaced_by_the_standby(cluster: Cluster) -> None:
    """Scenario: every process of one worker host is SIGKILLed at once; the attempt fails
    for that host; the job restarts on the standby worker and the committed output is
    exact."""
    cluster.start()
    client = cluster.submit()
    victim = _host_of_subtasks(cluster)
    assert cluster.net.kill_host(victim) >= 1
    # the coordinator (worker lost) or a surviving worker (its data connection to the
    # victim broke) sees the host die first, whichever is quicker under the machine's load
    cluster.wait_for(
        "client",
        rf"attempt 1 failed: .*(lost|data connection to worker {victim.name}:\S+ broke)",
        timeout_s=30,
    )
    cluster.release()
    log = cluster.finish(client)
    assert "attempt 2 starting from checkpoint" in log


def test_a_partitioned_worker_is_fenced_when_it_comes_back(cluster: Cluster) -> None:
    """Scenario: a worker host's link goes down past the heartbeat timeout; the job recovers
    without it; when the link comes back the worker finds itself fenced and rejoins idle."""
    cluster.start()
    client = cluster.submit()
    victim = _host_of_subtasks(cluster)
    cluster.net.cut(victim)
    cluster.wait_for("client", r"failed: .*no heartbeat", timeout_s=30)
    cluster.wait_for("client", r"attempt 2 starting", timeout_s=60)
    time.sleep(HEARTBEAT_TIMEOUT_S)
    cluster.net.heal(victim)
    cluster.release()
    cluster.finish(client)
    cluster.wait_for(victim.name, r"lost the coordinator", timeout_s=30)
    assert cluster.workers[victim.name].poll() is None, "the fenced worker should stay up"  # type: ignore[attr-defined]


def test_a_paused_worker_is_fenced_when_it_resumes(cluster: Cluster) -> None:
    """Scenario: a worker is SIGSTOPped past the heartbeat timeout (a zombie) and SIGCONTed
    after the job recovered on the standby; it is fenced and nothing it did counts."""
    cluster.start()
    client = cluster.submit()
    victim = _host_of_subtasks(cluster)
    pids = cluster.net.pids(victim)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    cluster.wait_for("client", r"failed: .*(no heartbeat|lost)", timeout_s=30)
    cluster.wait_for("client", r"attempt 2 starting", timeout_s=60)
    time.sleep(1.0)
    for pid in pids:
        os.kill(pid, signal.SIGCONT)
    cluster.release()
    cluster.finish(client)
    cluster.wait_for(victim.name, r"lost the coordinator", timeout_s=30)


def test_delay_and_loss_on_a_link_still_give_exact_output(tmp_path: Path) -> None:
    """Scenario: 200 ms delay and 5 % loss on one worker host's link (see TestNetwork.impair
    for kernels without netem); the job completes with exact output."""
    if shutil.which("nft") is None and not _has_netem():
        pytest.skip("neither sch_netem nor nftables here to impair a link")
    with TestNetwork(3) as net:
        c = Cluster(net, tmp_path, throttle_us=0)
        c.start()
        applied = net.impair(net.hosts[1], delay_ms=200, loss_percent=5)
        client = c.submit()
        log = c.finish(client)
        assert "checkpoint" in log, applied
        if applied.startswith("no netem"):
            assert net.dropped_packets(net.hosts[1]) > 0, f"no packet was dropped ({applied})"


def _has_netem() -> bool:
    with TestNetwork(1) as net:
        done = subprocess.run(
            ["ip", "netns", "exec", net.hosts[0].namespace, "tc", "qdisc", "add", "dev", "eth0",
             "root", "netem", "delay", "1ms"],
            capture_output=True, timeout=30,
        )  # fmt: skip
        return done.returncode == 0
