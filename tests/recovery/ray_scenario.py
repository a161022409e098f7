"""A Ray test scenario, run inside a network namespace of the test's own (see test_ray_*.py).

Starts a Ray cluster with Ray's own multi-node harness (a head without CPUs
and two worker nodes, each a raylet of its own on this host), runs
``weirflow run JOB --ray HEAD`` against it, breaks things while the job runs,
and prints one JSON report line. Usage::

    python ray_scenario.py SCENARIO WORKDIR [ARGS...]

Scenarios: ``run`` (no fault), ``node-loss N`` (remove a node that hosts a
worker N times at random moments, adding a fresh node each time),
``kill-actor`` (SIGKILL one worker actor's process), ``bad-input`` (the
refusals of a job the cluster cannot run). The committed output is checked by
the test, which also owns the namespace and kills what is left in it.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from chaos_helpers import JOB, completed_checkpoints
from ray.cluster_utils import Cluster

OBJECT_STORE_BYTES = 80 * 1024 * 1024
NODE_ARGS = {"num_cpus": 1, "object_store_memory": OBJECT_STORE_BYTES}


def start_cluster() -> Cluster:
    """A head with no CPUs (nothing placed there) and two worker nodes of 1 CPU each."""
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "include_dashboard": False,
            "object_store_memory": OBJECT_STORE_BYTES,
            "_system_config": json.loads(os.environ.get("WF_RAY_SYSTEM_CONFIG", "{}")),
        },
    )
    for _ in range(2):
        cluster.add_node(**NODE_ARGS)
    cluster.wait_for_nodes()
    return cluster


def weirflow_run(address: str, chk: Path, *extra: str) -> list[str]:
    """``weirflow run`` of the windowed job on 2 Ray workers (parallelism 2)."""
    return [
        sys.executable, "-m", "weirflow.cli", "run", JOB, "--ray", address,
        "--workers", "2", "--parallelism", "2", f"--checkpoint-dir={chk}",
        "--checkpoint-interval", "200ms", "--heartbeat-timeout", "3s", "--worker-wait", "60s",
        *extra,
    ]  # fmt: skip


def _net_namespace(pid: int | str) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def worker_actor_pids() -> list[int]:
    """Process ids of the weirflow worker actors in this network namespace."""
    mine = _net_namespace("self")
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if b"WorkerActor" in cmdline and _net_namespace(entry.name) == mine:
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def node_of(cluster: Cluster, pid: int) -> Any:
    """The harness node whose raylet started process ``pid`` (``None``: not found)."""
    raylets = {
        info.process.pid: node
        for node in cluster.list_all_nodes()
        for info in node.all_processes.get("raylet", [])
    }
    with_parents = [pid]
    while with_parents[-1] > 1 and len(with_parents) < 10:
        with_parents.append(_parent(with_parents[-1]))
    return next((raylets[p] for p in with_parents if p in raylets), None)


def wait_for_workers(timeout_s: float = 60.0, count: int = 2) -> list[int]:
    """Wait until ``count`` worker actor processes run; return their ids."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = worker_actor_pids()
        if len(pids) >= count:
            return pids
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} worker actors within {timeout_s} s")


def wait_for_new_checkpoint(chk: Path, client: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Wait until a checkpoint newer than now's latest completes; ``False`` if the job ended."""
    before = max(completed_checkpoints(chk), default=0)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.poll() is not None:
            return False
        if max(completed_checkpoints(chk), default=0) > before:
            return True
        time.sleep(0.05)
    raise AssertionError(f"no new checkpoint within {timeout_s} s")


def node_loss(cluster: Cluster, client: subprocess.Popen[bytes], chk: Path, times: int) -> dict:
    """Remove a node hosting a worker ``times`` times at random moments, each time adding a
    fresh node."""
    rng = random.Random(int(os.environ.get("WF_SEED", "7")))
    removed = 0
    recovery_s: list[float] = []
    while removed < times:
        if not wait_for_new_checkpoint(chk, client, 90):
            break
        # a random moment within a checkpoint interval: before, during or after the barrier
        time.sleep(rng.uniform(0.0, 0.4))
        pids = worker_actor_pids()
        nodes = [n for n in (node_of(cluster, p) for p in pids) if n is not None]
        if not nodes or client.poll() is not None:
            break
        cluster.remove_node(rng.choice(nodes), allow_graceful=False)
        lost_at = time.monotonic()
        removed += 1
        cluster.add_node(**NODE_ARGS)
        if wait_for_new_checkpoint(chk, client, 120):
            recovery_s.append(round(time.monotonic() - lost_at, 2))
    return {"removed": removed, "recovery_s": recovery_s}


def kill_actor(client: subprocess.Popen[bytes], chk: Path) -> dict:
    """SIGKILL one worker actor's process while the job runs."""
    wait_for_new_checkpoint(chk, client, 90)
    wait_for_new_checkpoint(chk, client, 90)
    pid = random.Random(3).choice(wait_for_workers())
    os.kill(pid, signal.SIGKILL)
    lost_at = time.monotonic()
    recovered = wait_for_new_checkpoint(chk, client, 120)
    took = round(time.monotonic() - lost_at, 2) if recovered else None
    return {"killed": pid, "recovery_s": took}


def bad_input(cluster: Cluster, work: Path) -> dict:
    """The refusals: more slots than free CPUs, an unreachable address, an unshared folder."""
    out: dict[str, Any] = {}

    def attempt(name: str, argv: list[str], prefix: list[str] = ()) -> None:  # type: ignore[assignment]
        done = subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=120)
        out[name] = {"rc": done.returncode, "stderr": done.stderr}

    address = cluster.address
    attempt("too_many_slots", weirflow_run(address, work / "chk1", "--parallelism", "8"))
    attempt("unreachable", weirflow_run("127.0.0.1:1", work / "chk2"))
    # the driver sees an empty folder of its own where the nodes see the real one: a folder
    # that is not shared between the machines of the cluster
    hidden = work / "private"
    hidden.mkdir()
    attempt(
        "node_local_folder",
        weirflow_run(address, hidden / "chk"),
        ["unshare", "--mount", "sh", "-c", f'mount -t tmpfs tmpfs {hidden} && exec "$@"', "sh"],
    )
    return out


def main() -> None:
    scenario, work = sys.argv[1], Path(sys.argv[2])
    cluster = start_cluster()
    report: dict[str, Any] = {"scenario": scenario, "address": cluster.address}
    try:
        if scenario == "bad-input":
            report |= bad_input(cluster, work)
            return
        chk = work / "chk"
        with (work / "client.log").open("wb") as log:
            client = subprocess.Popen(
                weirflow_run(cluster.address, chk, "--restart-strategy", "fixed-delay",
                             "--max-restarts", "30", "--restart-delay", "200ms"),
                stdout=log, stderr=log,
            )  # fmt: skip
            try:
                if scenario == "node-loss":
                    report |= node_loss(cluster, client, chk, int(sys.argv[3]))
                elif scenario == "kill-actor":
                    report |= kill_actor(client, chk)
                report["rc"] = client.wait(timeout=300)
            finally:
                if client.poll() is None:
                    client.kill()
        text = (work / "client.log").read_text(errors="replace")
        report["placed_on"] = sorted(set(re.findall(r"ray node (\w+) at", text)))
    finally:
        cluster.shutdown()
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
