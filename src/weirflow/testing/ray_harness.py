"""A Ray cluster for tests, run inside a network namespace (see :mod:`weirflow.testing.ray_hosts`).

Starts Ray's own multi-node harness: a head without CPUs (nothing is placed
there) and two worker nodes of two CPUs each (so that the bundle of a lost
node finds room on the other at once), every node a raylet of its own on
this host. Prints ``{"address": HEAD}`` and then answers commands, one a
line on stdin, with one JSON line on stdout:

- ``replace-node PID``: remove (as a crash: no graceful exit) the node whose
  raylet started process ``PID``, then add a fresh node;
  ``{"removed": NODE_ID or null}`` (Ray's node id, hex);
- ``nodes``: the live nodes as Ray reports them (``ray.nodes()``, this
  process connecting as a driver on first use): ``{"nodes": [NODE_ID, ...]}``.

End of input shuts the cluster down.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

import ray
from ray.cluster_utils import Cluster

from weirflow.testing.ray_hosts import parent_pid

OBJECT_STORE_BYTES = 80 * 1024 * 1024
NODE_ARGS = {"num_cpus": 2, "object_store_memory": OBJECT_STORE_BYTES}
_nodes_added = 0


def add_node(cluster: Cluster) -> None:
    """Add a worker node with a folder of its own for runtime environments.

    The harness's nodes share one session folder on this host; on separate
    machines each node unpacks the job's ``working_dir`` on its own disk, and
    a node that dies takes only its own copy with it.
    """
    global _nodes_added
    _nodes_added += 1
    cluster.add_node(**NODE_ARGS, runtime_env_dir_name=f"runtime_resources_{_nodes_added}")


def start_cluster() -> Cluster:
    """The head (no CPUs) and two worker nodes."""
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
        add_node(cluster)
    cluster.wait_for_nodes()
    return cluster


def node_of(cluster: Cluster, pid: int) -> Any:
    """The harness node whose raylet started process ``pid`` (``None``: not found)."""
    raylets = {
        info.process.pid: node
        for node in cluster.list_all_nodes()
        for info in node.all_processes.get("raylet", [])
    }
    chain = [pid]
    while chain[-1] > 1 and chain[-1] not in raylets and len(chain) < 10:
        chain.append(parent_pid(chain[-1]))
    return raylets.get(chain[-1])


def alive_nodes(cluster: Cluster) -> list[str]:
    """The ids (hex) of the nodes Ray reports alive; connects this process on first use."""
    if not ray.is_initialized():
        ray.init(address=cluster.address, log_to_driver=False, logging_level=logging.WARNING)
    return [n["NodeID"] for n in ray.nodes() if n["Alive"]]


def main() -> None:
    # The replies keep this process's stdout to themselves: once connected as a driver, Ray
    # prints there too (a removed node's raylet ending), so Ray gets stderr for it.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    def reply(message: dict[str, Any]) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    cluster = start_cluster()
    try:
        reply({"address": cluster.address})
        for line in sys.stdin:
            command, _, arg = line.strip().partition(" ")
            if command == "nodes":
                reply({"nodes": alive_nodes(cluster)})
                continue
            if command != "replace-node":
                reply({"error": f"unknown command {command!r}"})
                continue
            node = node_of(cluster, int(arg))
            if node is not None:
                cluster.remove_node(node, allow_graceful=False)
                add_node(cluster)
            reply({"removed": node.node_id if node is not None else None})
    finally:
        if ray.is_initialized():
            # the harness refuses to remove the head while a driver is connected to it
            ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
