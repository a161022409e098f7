"""Checks before a job starts on Ray, each failing with a one-line message and its fix.

1. :func:`connect`: the cluster answers at its address (a plain TCP connection
   first, with a timeout: ``ray.init`` waits minutes for an address where
   nothing listens);
2. :func:`check_free_cpus`: the cluster has a CPU free for every slot;
3. :func:`check_shared_folder`: a checkpoint folder is seen by every node as
   this process sees it (a folder local to each node would give every worker
   a checkpoint of its own, and restore would find none whole).

Imports ``ray``: only :mod:`weirflow.runtime.ray_cluster` imports this
module, and only once Ray is known to be installed.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Mapping
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from weirflow.checkpoint import CheckpointStorage
from weirflow.errors import ConfigError
from weirflow.runtime import control

log = logging.getLogger("weirflow.ray")

_CONNECT_TIMEOUT_S = 5.0
_DEFAULT_GCS_PORT = 6379
_PROBE_WAIT_S = 60.0


def _gcs_endpoint(address: str) -> tuple[str, int]:
    """``(host, port)`` of an address such as ``HOST:PORT`` or ``ray://HOST:PORT``."""
    bare = address.removeprefix("ray://")
    host, sep, port = bare.rpartition(":")
    if not sep:
        return bare, _DEFAULT_GCS_PORT
    try:
        return host.strip("[]"), int(port)
    except ValueError as e:
        raise ConfigError(f"Ray address {address!r} is not HOST:PORT nor ray://HOST:PORT") from e


def connect(address: str | None, runtime_env: Mapping[str, Any]) -> bool:
    """Connect this process to the Ray cluster at ``address``.

    Args:
        address: ``auto`` (the cluster this machine belongs to), ``HOST:PORT``
            of the head node, ``ray://HOST:PORT`` (Ray Client), or ``None``
            (start a Ray instance on this machine for the job).
        runtime_env: the job's Ray ``runtime_env``: Ray uploads a local
            ``working_dir`` only for a whole job, not per actor. A process
            connected already keeps the ``runtime_env`` it connected with
            (its job's files must reach the nodes through it).

    Returns:
        Whether this call connected (and the caller must ``ray.shutdown()``);
        ``False`` when this process was connected already.

    Raises:
        ConfigError: nothing answers at ``address``, or Ray refuses to connect.
    """
    if ray.is_initialized():
        if ray.get_runtime_context().get_actor_id() is not None:
            return False  # a detached coordinator: its job's files are its own working_dir
        log.warning(
            "this process is connected to Ray already: the workers get the runtime_env it "
            "connected with, not %s",
            dict(runtime_env),
        )
        return False
    if address not in (None, "auto"):
        host, port = _gcs_endpoint(address)
        try:
            socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT_S).close()
        except OSError as e:
            raise ConfigError(
                f"cannot reach the Ray cluster at {address}: {e.strerror or e}; is its head "
                "node up (ray start --head), and is the address right (auto, HOST:6379 or "
                "ray://HOST:10001)?"
            ) from e
    try:
        ray.init(
            address=address,
            runtime_env=dict(runtime_env),
            logging_level=logging.WARNING,
            include_dashboard=False,
        )
    except ConnectionError as e:
        raise ConfigError(
            f"cannot connect to the Ray cluster at {address}: {str(e).splitlines()[0]}"
        ) from e
    return True


def check_free_cpus(workers: int, slots: int, wait_s: float = 0.0) -> None:
    """Refuse a job that asks more CPUs (one per slot) than the cluster has free.

    Args:
        workers: worker actors.
        slots: slots per actor.
        wait_s: how long to wait for enough CPUs to become free (s) while the cluster has
            that many at all.

    Raises:
        ConfigError: ``workers × slots`` exceeds the free CPUs (after ``wait_s``).
    """
    need = workers * slots
    deadline = time.monotonic() + wait_s
    while (
        (free := ray.available_resources().get("CPU", 0.0)) < need
        and time.monotonic() < deadline
        and need <= ray.cluster_resources().get("CPU", 0.0)
    ):
        time.sleep(0.2)
    if need > free:
        total = ray.cluster_resources().get("CPU", 0.0)
        raise ConfigError(
            f"{workers} worker(s) × {slots} slot(s) need {need} CPUs but the Ray cluster has "
            f"{free:g} free (of {total:g}): lower --workers or --parallelism, or add nodes"
        )


def _sees_token(path: str, token: str) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read() == token
    except OSError:
        return False


def check_shared_folder(storage: CheckpointStorage) -> None:
    """Refuse a local checkpoint folder that not every live Ray node shares with this process.

    Writes a token into the job's folder, then reads it back on every live
    node with a task pinned there. Storage that is not a local folder (S3,
    ...) is shared by construction and not checked.

    Raises:
        ConfigError: a node does not see the token (the folder is node-local),
            or the nodes did not answer within 60 s.
    """
    if not storage.root_url.startswith("file://"):
        return
    token = uuid.uuid4().hex
    path = f"{storage.root}/{control.SHARED_PROBE}"
    storage.fs.makedirs(storage.root, exist_ok=True)
    storage.fs.pipe_file(path, token.encode())
    nodes = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
    reader = ray.remote(num_cpus=0, max_retries=0)(_sees_token)
    answers = {
        node: reader.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)
        ).remote(path, token)
        for node in nodes
    }
    try:
        results = ray.get(list(answers.values()), timeout=_PROBE_WAIT_S)
        seen = dict(zip(answers, results, strict=True))
    except (ray.exceptions.RayError, TimeoutError) as e:
        raise ConfigError(
            f"could not check that the Ray nodes share checkpoint folder {storage.root_url}: {e}"
        ) from e
    blind = [f"{node[:12]} at {nodes[node]}" for node, ok in seen.items() if not ok]
    if blind:
        raise ConfigError(
            f"checkpoint folder {storage.root_url} is local to this machine: Ray node(s) "
            f"{', '.join(blind)} do not see it; on a multi-node Ray cluster put checkpoints "
            "on S3 (--checkpoint-dir s3://BUCKET/PATH) or in a folder every node mounts"
        )


def node_address() -> str:
    """This process's address on the Ray cluster's network (where workers dial the coordinator)."""
    return str(ray.util.get_node_ip_address())


def disconnect() -> None:
    """Disconnect this process from Ray (a local Ray instance it started stops)."""
    ray.shutdown()
