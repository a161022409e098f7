"""Jobs on a Ray cluster: exact output through lost nodes and killed worker actors.

Ray binds the machine's real interfaces, so every Ray process runs inside a
network namespace this module creates (loopback only) and empties and deletes
at the end. There :mod:`ray_harness` runs Ray's multi-node harness (a head
without CPUs and two worker nodes, each a raylet of its own), shared by the
tests of this module, and each test runs ``weirflow run JOB --ray HEAD
--workers 2`` there and compares the committed output with the batch answer.
Along the way they read where the workers run (the dashboard's ``/api/workers``,
``weirflow status``) and compare it with Ray's own view of its nodes, and take
savepoints and stop jobs through the commands.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from chaos_helpers import JOB, ThrottleRelease, committed_results, completed_checkpoints, make_input
from test_workers_equivalence_jobs import committed

from weirflow.eventlog import EventLog
from weirflow.testing.hosts import can_create_hosts
from weirflow.testing.ray_hosts import RayInNamespace

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(can_create_hosts() is not None, reason=f"{can_create_hosts()}"),
]

HERE = Path(__file__).parent
SRC = HERE.parents[1] / "src"
# the Nexmark queries and their batch answers (jobs/nexmark_queries.py finds them by path
# beside its own file, which on a Ray node is a copy elsewhere: Ray's processes get it here)
NEXMARK = HERE.parents[1] / "benchmarks" / "nexmark"
Q5_EVENTS = 12_000  # 1.2 s of event time: several q5 sliding windows
# the dashboard's port inside the namespace (below Ray's worker port range, 10002-19999)
UI_PORT = 9123
# the node id in a worker's "placed on": ray node <id> at <ip>
PLACED = re.compile(r"ray node ([0-9a-f]+) at ")
# the windowed job's operators in job order, and their kinds
OPERATORS = {"events": "source", "parse": "map", "per_user": "window", "results": "sink"}
# each loss costs ~7 s (a fresh node, a new worker process, a restore), and between two the
# job runs on for a checkpoint or two and the dashboard's checks (up to a heartbeat): the
# job's input (45 000 records at 500 µs each) lasts long enough for all of them (30 000 ran
# out before the fifth loss was reported on a loaded machine)
NODE_LOSSES = 5


def weirflow_run(
    ns: RayInNamespace,
    work: Path,
    *extra: str,
    log: IO[bytes] | None = None,
    throttle_us: int = 0,
    wrap: list[str] | None = None,
    job: str = JOB,
    env_vars: dict[str, str] | None = None,
    py_modules: list[str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``weirflow run`` of ``job`` (the windowed job) on 2 worker actors (parallelism 2),
    with ``env_vars`` in the actors' environment too and ``py_modules`` (local package
    folders) shipped to them by Ray."""
    runtime_env: dict[str, object] = {
        "env_vars": {
            "WF_LOG_DIR": str(work / "log"), "WF_THROTTLE_US": str(throttle_us),
            **(env_vars or {}),
        }
    }  # fmt: skip
    if py_modules:
        runtime_env["py_modules"] = py_modules
    argv = [
        *ns.prefix(), *(wrap or []), sys.executable, "-m", "weirflow.cli", "run", job,
        "--ray", ns.address, "--workers", "2", "--parallelism", "2",
        f"--checkpoint-dir={work / 'chk'}", "--checkpoint-interval", "200ms",
        "--heartbeat-timeout", "3s", "--worker-wait", "60s",
        "--restart-strategy", "fixed-delay", "--max-restarts", "30",
        "--restart-delay", "200ms", "--ray-runtime-env-json", json.dumps(runtime_env),
        *extra,
    ]  # fmt: skip
    env = {**ns.env, "WF_LOG_DIR": str(work / "log"), **(env_vars or {})}
    if log is None:
        return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return subprocess.Popen(argv, env=env, stdout=log, stderr=log)


def weirflow_command(ns: RayInNamespace, *args: str) -> subprocess.Popen[bytes]:
    """Start ``weirflow ARGS`` in the namespace, wide enough that no table wraps."""
    return subprocess.Popen(
        [*ns.prefix(), sys.executable, "-m", "weirflow.cli", *args],
        env={**ns.env, "COLUMNS": "400"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def weirflow_cli(ns: RayInNamespace, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``weirflow ARGS`` in the namespace (see :func:`weirflow_command`)."""
    proc = weirflow_command(ns, *args)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
    )


def status_nodes(ns: RayInNamespace, *args: str, operators: bool = False) -> set[str]:
    """``weirflow status windowed_sum ARGS``: the Ray nodes of its 2 workers, every one live
    in Ray's own view; with ``operators`` also its operator table: every operator, of its
    kind, on 2 subtasks (asked again until both workers' heartbeats carried their counts)."""
    deadline = time.monotonic() + 60
    while True:
        done = weirflow_cli(ns, "status", "windowed_sum", *args)
        assert done.returncode == 0, done.stderr
        cells = [line.replace("│", " ").split() for line in done.stdout.splitlines()]
        table = {r[0]: r[1:3] for r in cells if r and r[0] in OPERATORS}
        if not operators or table == {op: [kind, "2"] for op, kind in OPERATORS.items()}:
            break
        assert time.monotonic() < deadline, done.stdout
    placed = PLACED.findall(done.stdout)
    assert "job windowed_sum (parallelism 2)" in done.stdout and len(placed) == 2, done.stdout
    assert set(placed) <= ns.alive_nodes(), done.stdout
    return set(placed)


def dashboard_nodes(ns: RayInNamespace, reading: bool = False) -> set[str]:
    """The dashboard's workers (``/api/workers``): 2, each on a node Ray reports alive;
    returns their nodes. Its operators (``/api/operators``, summed over the heartbeats of
    the current attempt, waited for): every operator of the job in job order at
    parallelism 2, nothing filtered, late or dead-lettered; with ``reading``, the source
    has read records and passed them on."""
    rows = ns.get_json(f"http://127.0.0.1:{UI_PORT}/api/workers")
    nodes = {m for r in rows for m in PLACED.findall(r["placed_on"])}
    assert len(rows) == 2 and len(nodes) >= 1 and nodes <= ns.alive_nodes(), rows
    deadline = time.monotonic() + 30
    while True:
        ops = ns.get_json(f"http://127.0.0.1:{UI_PORT}/api/operators")
        shown = [(o["operator"], o["kind"], o["parallelism"]) for o in ops]
        if shown == [(op, kind, 2) for op, kind in OPERATORS.items()] and (
            not reading or ops[0]["records_out"] > 0
        ):
            break
        assert time.monotonic() < deadline, ops
        time.sleep(0.3)
    assert all(o[k] == 0 for o in ops for k in ("filtered", "late", "dead_lettered")), ops
    return nodes


def savepoint_written(done: subprocess.CompletedProcess[str]) -> Path:
    """The savepoint folder that ``weirflow savepoint``/``stop`` printed (it exists)."""
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.strip().removeprefix("file://"))
    assert folder.is_dir(), done.stdout
    return folder


@pytest.fixture(scope="module")
def ray_ns() -> Iterator[RayInNamespace]:
    ns = RayInNamespace({**os.environ, "PYTHONPATH": f"{SRC}:{HERE}:{NEXMARK}"})
    try:
        yield ns
    finally:
        ns.close()


class Job:
    """One ``weirflow run --ray`` of the windowed job over seeded input, and its log;
    ``args``: further ``weirflow run`` options (a repeated option: the last one counts)."""

    def __init__(
        self,
        ns: RayInNamespace,
        work: Path,
        n: int,
        seed: int,
        throttle_us: int,
        args: tuple[str, ...] = (),
    ) -> None:
        self.ns = ns
        self.args = args
        self.work = work
        self.throttle_us = throttle_us
        self.expected = make_input(work / "log", n, seed=seed)
        # the throttle keeps the job running while a test acts on it; released, the rest of
        # the input runs at full speed
        self.release = ThrottleRelease(work)
        self.log_path = work / "client.log"
        # False: the job goes on after its client returned (a detached coordinator)
        self.watch_client = True
        self.submit()

    def submit(self, *extra: str) -> None:
        """Start (again) ``weirflow run`` of the job; its output goes to the log."""
        with self.log_path.open("ab") as log:
            self.client = weirflow_run(
                self.ns, self.work, *self.args, *extra, log=log, throttle_us=self.throttle_us,
                env_vars=self.release.env,
            )  # fmt: skip

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_new_checkpoint(self, timeout_s: float = 90) -> bool:
        """Wait until a checkpoint newer than now's latest completes; ``False``: the job ended."""
        chk = self.work / "chk"
        before = max(completed_checkpoints(chk), default=0)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if max(completed_checkpoints(chk), default=0) > before:
                return True
            if self.watch_client and self.client.poll() is not None:
                return False
            time.sleep(0.05)
        raise AssertionError(f"no new checkpoint within {timeout_s} s\n{self.text()[-3000:]}")

    def check_exact(self) -> None:
        """The job ends with exit 0 and its committed output is exactly the batch answer."""
        try:
            rc = self.client.wait(timeout=240)
        finally:
            if self.client.poll() is None:
                self.client.kill()
        assert rc == 0, f"weirflow run exit {rc}\n{self.text()[-4000:]}"
        got = committed_results(self.work / "log")
        missing, extra = self.expected - got, got - self.expected
        assert not missing and not extra, (
            f"{sum(missing.values())} missing, {sum(extra.values())} extra\n{self.text()[-4000:]}"
        )


def _python_driver(ray_ns: RayInNamespace, tmp_path: Path) -> subprocess.Popen[str]:
    """Start a Python driver in the namespace that runs the job with
    ``flow.run(cluster=RayCluster(..., detached=True))``: under a detached coordinator
    actor, waited for."""
    code = (
        "import sys; from datetime import timedelta\n"
        f"sys.path.insert(0, {str(HERE / 'jobs')!r})\n"
        "import windowed_sum\n"
        "from weirflow import CheckpointConfig, RayCluster\n"
        "result = windowed_sum.flow.run(\n"
        "    2,\n"
        f"    checkpoint=CheckpointConfig(storage={str(tmp_path / 'chk')!r},\n"
        "                                interval=timedelta(milliseconds=200)),\n"
        f"    cluster=RayCluster(address={ray_ns.address!r}, workers=2,\n"
        f"        runtime_env={{'env_vars': {{'WF_LOG_DIR': {str(tmp_path / 'log')!r}}}}},\n"
        "        detached=True),\n"
        ")\n"
        "print('events in:', result.operators['events'].records_in)\n"
    )
    return subprocess.Popen(
        [*ray_ns.prefix(), sys.executable, "-c", code],
        env={**ray_ns.env, "WF_LOG_DIR": str(tmp_path / "log")},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_windowed_job_on_three_node_ray_cluster_gives_batch_answer(
    ray_ns: RayInNamespace, tmp_path: Path
) -> None:
    """Scenario: the windowed job with 2 worker actors spread over the 2 worker nodes, run
    by ``weirflow run --ray`` and, at the same time, from Python with
    ``flow.run(cluster=RayCluster(detached=True))``."""
    api_expected = make_input(tmp_path / "api" / "log", 5_000, seed=26)
    driver = _python_driver(ray_ns, tmp_path / "api")
    job = Job(ray_ns, tmp_path / "cli", 20_000, seed=21, throttle_us=0)
    try:
        out, err = driver.communicate(timeout=180)
    finally:
        driver.kill()
    assert driver.returncode == 0, err[-4000:]
    assert "events in: 5000" in out, out
    assert committed_results(tmp_path / "api" / "log") == api_expected
    job.check_exact()
    text = job.text()
    # spread: a worker on each worker node (the head offers no CPU), each shown with its node
    nodes = {ln.split("(ray node ")[1].split()[0] for ln in text.splitlines() if "(ray node " in ln}
    assert len(nodes) == 2, text[-3000:]


def test_nexmark_q5_with_a_node_loss_gives_batch_answer(
    ray_ns: RayInNamespace, tmp_path: Path
) -> None:
    """Scenario: Nexmark q5 (hot items over sliding windows) with 2 worker actors spread over
    the 2 worker nodes, checkpointing every 200 ms; a node hosting a worker is removed at a
    random moment after the first checkpoint (a fresh node added), and the job restores."""
    sys.path.insert(0, str(NEXMARK))
    import reference

    from weirflow.connectors.nexmark import NexmarkGenerator

    rng = random.Random(27)
    want = reference.REFERENCES["q5"](NexmarkGenerator().events(0, 1, Q5_EVENTS))
    log_dir = tmp_path / "log"
    with EventLog(log_dir) as lg:
        lg.create_topic("nexmark.q5", 2)
    client_log = tmp_path / "client.log"
    release = ThrottleRelease(tmp_path)
    with client_log.open("wb") as out:
        proc = weirflow_run(
            ray_ns, tmp_path, job=str(HERE / "jobs" / "nexmark_queries.py"), log=out,
            throttle_us=1000,
            env_vars={"WF_NEXMARK_QUERIES": "q5", "WF_NEXMARK_EVENTS": str(Q5_EVENTS),
                      **release.env},
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "chk").glob("nexmark_queries/chk-*/_manifest")):
            assert proc.poll() is None and time.monotonic() < deadline, client_log.read_text()
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.4))
        pids = ray_ns.worker_actor_pids()
        assert len(pids) == 2, pids
        removed = ray_ns.replace_node_of(rng.choice(pids))
        assert removed is not None and proc.poll() is None, client_log.read_text()[-3000:]
        # a worker is gone with its node: the attempt cannot end without a restart
        release()
        rc = proc.wait(timeout=180)
    finally:
        proc.kill()
    text = client_log.read_text(errors="replace")
    assert rc == 0, text[-4000:]
    assert "restarting in" in text, text[-4000:]  # the loss failed a running attempt
    got = sorted(committed(log_dir, ["nexmark.q5"])["nexmark.q5"].elements())
    assert len({r[0] for r in want}) >= 3  # several sliding windows
    assert reference.final("q5", got) == want


def test_node_loss_gives_batch_answer(ray_ns: RayInNamespace, tmp_path: Path) -> None:
    """Scenario: a node hosting a worker actor crashes (removed without a graceful exit) at a
    random moment after a checkpoint, 5 times, a fresh node added each time. The ports of its
    worker actors are silenced first: a crashed machine closes no connection, so only Ray's
    report of the dead node (the heartbeat timeout is 120 s) can end the attempt. The
    dashboard (``/api/workers``) names the nodes of the workers, every one live in Ray's view,
    and after each loss no longer the removed node; it lists every operator at parallelism 2
    (``/api/operators``). The coordinator in the driver evaluates ``--alert restarts>0`` and
    posts its firing, once, to a webhook in the namespace."""
    rng = random.Random(22)
    posts = tmp_path / "alerts.jsonl"
    hook, hook_url = ray_ns.receive_posts(posts)
    job = Job(
        ray_ns, tmp_path, 45_000, 22, 500,
        ("--heartbeat-timeout", "120s", "--ui-port", str(UI_PORT), "--alert", "restarts>0",
         "--alert-webhook", hook_url, "--alert-every", "200ms"),
    )  # fmt: skip
    removed: list[str] = []
    recovery_s = []
    assert job.wait_for_new_checkpoint(), job.text()[-3000:]
    nodes = dashboard_nodes(ray_ns, reading=True)
    assert not posts.exists(), posts.read_text()  # no restart yet: no alert
    first_loss_ms = int(time.time() * 1000)
    while len(removed) < NODE_LOSSES and job.wait_for_new_checkpoint():
        # within the checkpoint interval: before, at or after the next barrier
        time.sleep(rng.uniform(0.0, 0.4))
        pids = ray_ns.worker_actor_pids()
        if not pids or job.client.poll() is not None:
            break
        crashed = rng.choice(pids)
        ray_ns.silence(ray_ns.worker_actors_beside(crashed))
        lost_at = time.monotonic()
        node = ray_ns.replace_node_of(crashed)
        if node is not None:
            removed.append(node)
            recovered = job.wait_for_new_checkpoint(120)
            # the crashed processes are gone and the attempt they were part of has ended: their
            # ports may serve new processes, the dashboard's own request among them
            ray_ns.unsilence()
            if recovered:
                recovery_s.append(round(time.monotonic() - lost_at, 1))
                after = dashboard_nodes(ray_ns)
                assert node in nodes and node not in after, (node, nodes, after)
                nodes = after
        else:
            ray_ns.unsilence()
    print(f"node losses: {len(removed)}; first checkpoint after each (s): {recovery_s}")
    job.release()
    job.check_exact()
    assert len(removed) == NODE_LOSSES, f"the job ended after {len(removed)} node losses"
    text = job.text()
    for node in removed:
        assert f"lost: Ray reports its node {node[:12]} at " in text, text[-4000:]
    assert "its connection ended" not in text and "no heartbeat for" not in text, text[-4000:]
    # the coordinator in the driver evaluated the alert on its restarts and posted it once
    hook.kill()
    alerts = [json.loads(line) for line in posts.read_text().splitlines()]
    assert [(a["alert"], a["state"], a["job"]) for a in alerts] == [
        ("restarts>0", "firing", "windowed_sum")
    ], alerts
    assert alerts[0]["value"] >= 1 and alerts[0]["at_ms"] >= first_loss_ms, alerts


def test_sigkill_of_worker_actor_driver_and_detached_coordinator_gives_batch_answer(
    ray_ns: RayInNamespace, tmp_path: Path
) -> None:
    """Scenario: one worker actor's process is SIGKILLed while the job runs; after the
    restart ``weirflow status``, ``savepoint`` and ``stop`` reach the coordinator in the
    driver; the job is resubmitted with ``--restore latest`` and the driver is SIGKILLed;
    the job is resubmitted with ``--restore latest --ray-detached`` and an ``--alert`` on its
    lag: the client returns once the job runs, a second submission is refused, the job
    checkpoints on without it, its coordinator actor posts the alert's firing once, and
    ``status`` and ``stop`` (with its savepoint) with ``--ray ADDRESS`` reach its
    coordinator actor;
    resubmitted detached once more,
    its coordinator actor's process is SIGKILLed (its worker actors end with it), and the
    job is resubmitted with ``--restore latest`` and waited for (``--ray-wait``)."""
    # 20 s of input at 2 records/ms: the job outlasts the commands asked of it
    job = Job(ray_ns, tmp_path, 40_000, seed=23, throttle_us=1000)
    chk = f"--checkpoint-dir={tmp_path / 'chk'}"
    try:
        assert job.wait_for_new_checkpoint() and job.wait_for_new_checkpoint()
        pids = ray_ns.worker_actor_pids()
        assert len(pids) == 2, pids
        os.kill(random.Random(23).choice(pids), signal.SIGKILL)
        lost_at = time.monotonic()
        assert job.wait_for_new_checkpoint(120), job.text()[-3000:]
        print(f"first checkpoint after SIGKILL: {time.monotonic() - lost_at:.1f} s")
        assert "ActorDiedError" in job.text()

        # the coordinator in the driver answers through the job's control endpoint
        status_nodes(ray_ns, chk)
        savepoint_written(weirflow_cli(ray_ns, "savepoint", "windowed_sum", chk))
        savepoint_written(weirflow_cli(ray_ns, "stop", "windowed_sum", chk))
        assert job.client.wait(timeout=60) == 0, job.text()[-3000:]

        job.submit("--restore", "latest")
        assert job.wait_for_new_checkpoint(), "the job ended before the driver could be killed"
        os.kill(job.client.pid, signal.SIGKILL)
        job.client.wait(timeout=30)
        # the job stops with its driver: Ray ends the driver's actors, nothing runs on
        _wait_for_no_worker_actors(ray_ns, "their driver")

        # the detached coordinator evaluates the job's --alert rules in its actor
        posts = tmp_path / "alerts.jsonl"
        hook, hook_url = ray_ns.receive_posts(posts)
        job.submit(
            "--restore", "latest", "--ray-detached", "--alert", "lag_records>1000",
            "--alert-webhook", hook_url, "--alert-every", "200ms",
        )  # fmt: skip
        assert job.client.wait(timeout=120) == 0, job.text()[-3000:]
        assert "runs under detached Ray actor weirflow-job-" in job.text(), job.text()[-3000:]
        job.watch_client = False
        # a job runs once: a second submission while its coordinator lives is refused
        _refused(
            weirflow_run(ray_ns, tmp_path, "--restore", "latest", "--ray-detached"),
            "runs already under detached Ray actor weirflow-job-",
        )
        assert job.wait_for_new_checkpoint(), job.text()[-3000:]
        # the detached coordinator answers through Ray
        on_ray = ("--ray", ray_ns.address)
        status_nodes(ray_ns, *on_ray, operators=True)
        savepoint_written(weirflow_cli(ray_ns, "stop", "windowed_sum", *on_ray))
        _wait_for_no_worker_actors(ray_ns, "their stopped coordinator", "DetachedCoordinator")
        hook.kill()
        # the backlog of a throttled job stays above the threshold: one firing, not one a round
        alerts = [json.loads(line) for line in posts.read_text().splitlines()]
        assert [(a["alert"], a["state"], a["job"]) for a in alerts] == [
            ("lag_records>1000", "firing", "windowed_sum")
        ], alerts

        job.submit("--restore", "latest", "--ray-detached")
        assert job.wait_for_new_checkpoint(), job.text()[-3000:]
        coordinators = ray_ns.actor_pids("DetachedCoordinator")
        assert len(coordinators) == 1, coordinators
        os.kill(coordinators[0], signal.SIGKILL)
        _wait_for_no_worker_actors(ray_ns, "their detached coordinator")

        job.watch_client = True
        job.release()
        job.submit("--restore", "latest", "--ray-detached", "--ray-wait")
        job.check_exact()
    finally:
        # a failed run must not leave a job running into the other tests
        for pid in ray_ns.actor_pids("DetachedCoordinator"):
            os.kill(pid, signal.SIGKILL)


def test_autoscale_runs_the_job_again_on_more_worker_actors(
    ray_ns: RayInNamespace, tmp_path: Path
) -> None:
    """Scenario: ``--autoscale`` of the windowed job started at parallelism 1 on 1 worker
    actor with a backlog it needs seconds for: the coordinator in the driver decides to
    scale up, stops the run with a stop checkpoint, and the driver runs the job again at
    parallelism 2 on 2 worker actors (a new placement group, once Ray freed the first
    run's CPU), which restore it; the output is exact. The actors are packed
    (``--ray-placement pack``): both of the second run on one node."""
    job = Job(
        ray_ns, tmp_path, 8_000, 28, 2000,
        ("--workers", "1", "--parallelism", "1", "--ray-placement", "pack",
         "--autoscale", "min=1,max=2,target-lag=500ms,cooldown=1s,sustain=1s"),
    )  # fmt: skip
    job.check_exact()
    text = job.text()
    made = re.findall(r"autoscale (up|down): parallelism (\d) -> (\d)", text)
    assert made[:1] == [("up", "1", "2")], text[-4000:]
    # the second run: 2 new worker actors joined, packed on one Ray node
    second = text.split("rescaling to parallelism 2 on 2 workers from the stop checkpoint")
    assert len(second) == 2, text[-4000:]
    joined = re.findall(r"joined from .*\(ray node ([0-9a-f]+)", second[1].split("rescaling")[0])
    assert len(joined) >= 2 and len(set(joined[:2])) == 1, second[1][:4000]


def test_detached_coordinator_autoscales_onto_more_worker_actors(
    ray_ns: RayInNamespace, tmp_path: Path
) -> None:
    """Scenario: as :func:`test_autoscale_runs_the_job_again_on_more_worker_actors`, with the
    coordinator in a detached Ray actor (``--ray-detached --ray-wait``): the actor decides
    to scale up, stops the run with a stop checkpoint, and runs the job again at
    parallelism 2 on 2 new worker actors, which restore it; the output is exact. Seen from
    outside the actor: the worker actors' processes (1, then 2 others) and the completed
    checkpoints' manifests (parallelism 1, then 2)."""
    _wait_for_no_worker_actors(ray_ns, "the tests before")
    job = Job(
        ray_ns, tmp_path, 8_000, 29, 2000,
        ("--workers", "1", "--parallelism", "1", "--ray-detached", "--ray-wait",
         "--autoscale", "min=1,max=2,target-lag=500ms,cooldown=1s,sustain=1s"),
    )  # fmt: skip
    try:
        placements: list[frozenset[int]] = []  # the worker actors' pids, as they changed
        parallelism: dict[int, int] = {}  # completed checkpoint → the job's parallelism
        while job.client.poll() is None:
            pids = frozenset(ray_ns.worker_actor_pids())
            if pids and (not placements or placements[-1] != pids):
                placements.append(pids)
            for manifest in (tmp_path / "chk").glob("windowed_sum/chk-*/_manifest"):
                with contextlib.suppress(FileNotFoundError):  # retention deleted it
                    body = json.loads(manifest.read_bytes())["manifest"]
                    parallelism[body["checkpoint_id"]] = body["parallelism"]
            time.sleep(0.1)
        job.check_exact()
    finally:
        # a failed run must not leave a job running into the other tests
        for pid in ray_ns.actor_pids("DetachedCoordinator"):
            os.kill(pid, signal.SIGKILL)
    assert "runs under detached Ray actor weirflow-job-windowed_sum" in job.text(), job.text()
    first = placements[0]
    assert len(first) == 1, placements
    assert any(len(p) == 2 and not p & first for p in placements), placements
    seen = [parallelism[c] for c in sorted(parallelism)]
    assert seen[0] == 1 and 2 in seen, parallelism


def _wait_for_no_worker_actors(
    ray_ns: RayInNamespace, owner: str, actor_class: str = "WorkerActor"
) -> None:
    deadline = time.monotonic() + 60
    while ray_ns.actor_pids(actor_class) or ray_ns.worker_actor_pids():
        assert time.monotonic() < deadline, f"worker actors outlived {owner}"
        time.sleep(0.2)


def _refused(proc: subprocess.Popen[bytes], words: str) -> None:
    _, err = proc.communicate(timeout=120)
    stderr = err.decode(errors="replace")
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and words in errors[0], stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]


PY_MODULES_JOB = """\
import os

from weirflow import Dataflow
from weirflow.connectors import EventLogSink, EventLogSource

LOG_DIR = os.environ["WF_LOG_DIR"]


def tripled(raw: bytes) -> list:
    # imported where the record is processed: only the worker actors have the package
    import wf_amounts

    return wf_amounts.tripled(raw)


flow = Dataflow("py_modules_job")
(
    flow.source(EventLogSource(LOG_DIR, "events", group="py_modules_job"), name="events")
    .map(tripled, name="tripled")
    .sink(EventLogSink(LOG_DIR, "results"), name="results")
)
"""


def test_py_modules_ship_a_package_the_nodes_do_not_have(
    ray_ns: RayInNamespace, tmp_path: Path
) -> None:
    """Scenario: the job's map imports a package that is neither beside the job file (Ray's
    ``working_dir``) nor on the cluster's path; ``--ray-runtime-env-json`` names its folder
    in ``py_modules``, and the worker actors import it: the output is every input record
    through the package's function, once. Without ``py_modules`` the import fails in the
    actors (the job restarts until it gives up)."""
    job_dir, lib = tmp_path / "job", tmp_path / "lib" / "wf_amounts"
    job_dir.mkdir()
    lib.mkdir(parents=True)
    (job_dir / "py_modules_job.py").write_text(PY_MODULES_JOB)
    (lib / "__init__.py").write_text(
        "import json\n\n\ndef tripled(raw):\n"
        "    e = json.loads(raw)\n    return [e['user'], 3 * e['amount']]\n"
    )
    make_input(tmp_path / "log", 3_000, seed=31)

    def event(raw: bytes) -> tuple[str, int]:
        e = json.loads(raw)
        return (e["user"], 3 * e["amount"])

    want = committed(tmp_path / "log", ["events"], decode=event)["events"]
    proc = weirflow_run(
        ray_ns, tmp_path, "--max-restarts", "2", job=str(job_dir / "py_modules_job.py"),
        py_modules=[str(lib)],
    )  # fmt: skip
    try:
        _, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 0, err.decode(errors="replace")[-4000:]
    assert committed(tmp_path / "log", ["results"])["results"] == want


def test_refusals_are_one_line_errors(ray_ns: RayInNamespace, tmp_path: Path) -> None:
    """Scenario: more slots than free CPUs, an unreachable head, a checkpoint folder that the
    driver does not share with the nodes; ``weirflow status``/``stop --ray`` of a job that
    does not run there, or with a head that does not answer."""
    work = {case: tmp_path / case for case in ("slots", "address", "folder")}
    for folder in work.values():
        make_input(folder / "log", 100, seed=24)
    # The driver sees an empty folder of its own where the nodes see the real one: a folder
    # that is not shared between the machines of the cluster.
    chk = work["folder"] / "chk"
    chk.mkdir()
    hide = ["unshare", "--mount", "sh", "-c", f'mount -t tmpfs tmpfs {chk} && exec "$@"', "sh"]
    # independent: all three at once
    runs = [
        (weirflow_run(ray_ns, work["slots"], "--parallelism", "8"),
         "need 8 CPUs but the Ray cluster has 4 free (of 4)"),
        (weirflow_run(ray_ns, work["address"], "--ray", "127.0.0.1:1"),
         "cannot reach the Ray cluster at 127.0.0.1:1"),
        (weirflow_run(ray_ns, work["folder"], wrap=hide),
         "on a multi-node Ray cluster put checkpoints on S3"),
    ]  # fmt: skip
    runs += [
        (weirflow_command(ray_ns, "status", "nosuch", "--ray", ray_ns.address),
         "no job 'nosuch' runs under a detached coordinator on the Ray cluster at "),
        (weirflow_command(ray_ns, "stop", "windowed_sum", "--ray", "127.0.0.1:1"),
         "cannot reach the Ray cluster at 127.0.0.1:1"),
    ]  # fmt: skip
    for proc, words in runs:
        _refused(proc, words)


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
        [sys.executable, "-c", code, "run", JOB, "--ray", "auto", "--workers", "2",
         f"--checkpoint-dir={tmp_path / 'chk'}"],
        env={**os.environ, "WF_LOG_DIR": str(tmp_path / "log")},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "pip install 'weirflow[ray]'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
