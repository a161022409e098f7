"""The Ray launcher: a job's workers as Ray actors in one placement group.

Ray places the worker processes on nodes, ships the job's files (its
``runtime_env``) and tells when an actor died; it carries no records. Each
actor runs a :class:`~weirflow.runtime.worker.Worker` in its own process: the
worker dials the coordinator and opens the runtime's own authenticated data
connections to its peers, exactly as a worker started by hand does.

- One placement group with one bundle per worker (``{"CPU": slots}`` plus the
  worker's extra resources), spread over nodes (best effort) or packed.
- Actors are created with ``max_restarts=0``: weirflow, not Ray, decides what
  restarts, so no actor comes back on its own with the state of an older attempt.
- A worker actor whose long-running ``serve`` call ended (it returned, raised,
  or the actor died: ``ActorDiedError``) is killed for good and replaced in
  the same bundle. When the bundle's node died, Ray places the bundle again on
  a node with free resources, and the replacement waits for it there.
- A node that Ray reports dead (its health checks failed: ``ray.nodes()``
  says it is not alive) takes its worker actors with it: a thread reports
  each to the coordinator as lost at once (:class:`LostProcess`), so the
  attempt fails even when the crashed machine closed no connection and the
  heartbeat timeout is long. An actor found ended by :meth:`RayLauncher.replace_exited`
  is reported the same way before it is replaced.
- The actors run in the driver's job ``runtime_env``, whose ``working_dir``
  carries the job's files to the nodes.
- The job's secret and checkpoint key reach the actor as arguments of its
  constructor (through Ray's control plane), never on a command line.

``ray`` is imported only by this module, and this module only when a job runs
on Ray, so the rest of weirflow needs no Ray.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from weirflow.checkpoint import KEY_ENV, KEY_FILE_ENV
from weirflow.errors import ConfigError
from weirflow.graph import LogicalGraph
from weirflow.runtime.launcher import LostProcess
from weirflow.runtime.worker import Worker

log = logging.getLogger("weirflow.launcher")

# Resources with an option of their own in ``ray.remote``; any other name is a custom resource.
_NAMED_RESOURCES = {"GPU": "num_gpus", "memory": "memory"}


def adopt_checkpoint_key(checkpoint_key: bytes | None) -> None:
    """Hand an actor's process the job's checkpoint key as any worker's environment does.

    Args:
        checkpoint_key: the key, or ``None`` (none configured: nothing changes).
    """
    if checkpoint_key is not None:
        os.environ[KEY_ENV] = checkpoint_key.hex()
        os.environ.pop(KEY_FILE_ENV, None)


class WorkerActor:
    """A Ray actor's body: one weirflow worker in the actor's process.

    Args:
        secret: the job's secret.
        checkpoint_key: the job's checkpoint key, or ``None`` (none configured).
    """

    def __init__(self, secret: bytes, checkpoint_key: bytes | None) -> None:
        self._secret = secret
        adopt_checkpoint_key(checkpoint_key)

    def where(self) -> tuple[int, str, str]:
        """``(process id, Ray node id, node IP)`` of this actor."""
        return os.getpid(), ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()

    def serve(self, coordinator: str, slots: int, load_graph: Callable[[str], LogicalGraph]) -> int:
        """Run a worker with ``slots`` slots for ``coordinator`` until it shuts the worker down.

        Returns:
            0 after the coordinator's shutdown.

        Raises:
            OSError, PeerAuthenticationError, CoordinatorLostError: as
                :meth:`Worker.serve` (the worker does not dial again after losing
                the coordinator: the launcher replaces the actor).
        """
        _, node, ip = self.where()
        worker = Worker(
            coordinator,
            self._secret,
            slots,
            load_graph,
            host_address=ip,
            reconnect=False,
            location=f"ray node {node} at {ip}",
        )
        return worker.serve()


@dataclass
class _Placed:
    """One bundle's current actor and its calls."""

    actor: Any
    serving: Any  # ObjectRef of the long-running serve call
    where: Any  # ObjectRef of (pid, node id, node ip)
    reported: bool = False  # its node's death was reported to the coordinator


@dataclass(frozen=True)
class WorkerShape:
    """What one worker actor asks of Ray.

    Attributes:
        slots: the worker's slots; it asks one CPU per slot.
        resources: further resources per worker (``GPU``, ``memory`` in
            bytes, or custom resource names), never ``CPU``.

    The actors run in the driver's job ``runtime_env`` (``working_dir`` with
    the job's files): Ray uploads a local folder only for a whole job.
    """

    slots: int
    resources: Mapping[str, float]

    def bundle(self) -> dict[str, float]:
        """The placement-group bundle of one worker."""
        return {"CPU": float(self.slots), **self.resources}

    def actor_options(self) -> dict[str, Any]:
        """Keyword arguments of ``ActorClass.options`` for one worker actor."""
        res = self.resources
        named = {opt: res[r] for r, opt in _NAMED_RESOURCES.items() if r in res}
        custom = {r: v for r, v in self.resources.items() if r not in _NAMED_RESOURCES}
        return {
            "num_cpus": self.slots,
            **named,
            "resources": custom,
            "max_restarts": 0,
            # serve() runs for the job's life; where() must still answer
            "max_concurrency": 2,
        }


class RayLauncher:
    """Starts ``workers`` worker actors in one placement group (see the module docs).

    Args:
        workers: worker actors, ≥ 1.
        shape: what each asks of Ray.
        secret: the job's secret.
        load_graph: ``JOB.py[:NAME]`` → logical graph, run inside the actors
            (importable there by reference, e.g. :func:`weirflow.api.load_graph`).
        checkpoint_key: the job's checkpoint key, handed to every actor.
        pack: pack the bundles onto as few nodes as possible (default: spread).
        ready_timeout_s: how long :meth:`start` waits for Ray to place the bundles (s).
        node_poll_s: how often Ray's view of the nodes is read for dead ones (s).
    """

    def __init__(
        self,
        workers: int,
        shape: WorkerShape,
        secret: bytes,
        load_graph: Callable[[str], LogicalGraph],
        *,
        checkpoint_key: bytes | None = None,
        pack: bool = False,
        ready_timeout_s: float = 60.0,
        node_poll_s: float = 0.5,
    ) -> None:
        self.workers = workers
        self.shape = shape
        self._secret = secret
        self._load_graph = load_graph
        self._checkpoint_key = checkpoint_key
        self._strategy = "PACK" if pack else "SPREAD"
        self._ready_timeout_s = ready_timeout_s
        self._actor_class = ray.remote(WorkerActor)
        self._group: Any = None
        self._coordinator = ""
        self.placed: list[_Placed] = []
        self._node_poll_s = node_poll_s
        self._report: Callable[[LostProcess], None] | None = None
        self._closing = threading.Event()
        self._watcher: threading.Thread | None = None

    def watch(self, report: Callable[[LostProcess], None]) -> None:
        """From :meth:`start` on, report to ``report`` each worker actor whose node Ray
        declares dead (from a thread of this launcher) or whose ``serve`` call ended (from
        :meth:`replace_exited`)."""
        self._report = report

    def start(self, coordinator: str) -> None:
        """Reserve the placement group, then start one worker actor per bundle.

        Raises:
            ConfigError: Ray did not place the bundles within ``ready_timeout_s``.
        """
        self._coordinator = coordinator
        self._group = placement_group([self.shape.bundle()] * self.workers, strategy=self._strategy)
        ready, _ = ray.wait([self._group.ready()], timeout=self._ready_timeout_s)
        if not ready:
            remove_placement_group(self._group)
            self._group = None
            free = ray.available_resources().get("CPU", 0.0)
            raise ConfigError(
                f"Ray did not place {self.workers} worker(s) of {self.shape.bundle()} within "
                f"{self._ready_timeout_s:.0f} s ({free:g} CPUs free): lower --workers or "
                "--parallelism, add nodes, or wait longer (--worker-wait)"
            )
        self.placed = [self._spawn(k) for k in range(self.workers)]
        if self._report is not None:
            self._watcher = threading.Thread(
                target=self._watch_nodes, name="weirflow-ray-nodes", daemon=True
            )
            self._watcher.start()

    def _watch_nodes(self) -> None:
        while not self._closing.wait(self._node_poll_s):
            dead = self._dead_nodes()
            # a copy: the coordinator's thread replaces entries
            for placed in list(self.placed):
                self._report_lost(placed, dead, None)

    def _dead_nodes(self) -> set[str]:
        try:
            return {n["NodeID"] for n in ray.nodes() if not n["Alive"]}
        except ray.exceptions.RayError as e:
            log.warning("cannot read Ray's nodes (%s)", e)
            return set()

    def _report_lost(self, placed: _Placed, dead: set[str], ended: str | None) -> None:
        """Report ``placed``'s worker lost (once) if its node is in ``dead`` or its ``serve``
        call ``ended`` (how, for the reason; ``None``: it runs)."""
        where = self._where(placed)
        if self._report is None or placed.reported or where is None:
            return
        pid, node, ip = where
        if node in dead:
            reason = f"Ray reports its node {node[:12]} at {ip} dead"
        elif ended is not None:
            reason = f"its Ray actor on node {node[:12]} at {ip} ended ({ended})"
        else:
            return
        placed.reported = True
        self._report(LostProcess(pid, ip, reason))

    def _spawn(self, bundle: int) -> _Placed:
        strategy = PlacementGroupSchedulingStrategy(
            placement_group=self._group, placement_group_bundle_index=bundle
        )
        actor = self._actor_class.options(
            scheduling_strategy=strategy, **self.shape.actor_options()
        ).remote(self._secret, self._checkpoint_key)
        return _Placed(
            actor,
            actor.serve.remote(self._coordinator, self.shape.slots, self._load_graph),
            actor.where.remote(),
        )

    def replace_exited(self) -> int:
        """Replace every worker actor whose ``serve`` call ended, reporting its worker lost
        first; return how many."""
        if not self.placed:
            return 0
        done, _ = ray.wait(
            [p.serving for p in self.placed], num_returns=len(self.placed), timeout=0
        )
        ended = set(done)
        dead = self._dead_nodes() if ended else set()
        started = 0
        for k, placed in enumerate(self.placed):
            if placed.serving not in ended:
                continue
            try:
                outcome = f"returned {ray.get(placed.serving)}"
            except ray.exceptions.RayError as e:
                outcome = f"{type(e).__name__}: {str(e).splitlines()[0]}"
            log.warning("worker actor of bundle %d ended (%s); starting another", k, outcome)
            self._report_lost(placed, dead, outcome)
            ray.kill(placed.actor, no_restart=True)
            self.placed[k] = self._spawn(k)
            started += 1
        return started

    def _where(self, placed: _Placed) -> tuple[int, str, str] | None:
        # An actor that has not answered yet has not started, so it cannot be a worker the
        # coordinator knows: never wait for it (the coordinator's loop may be calling).
        ready, _ = ray.wait([placed.where], timeout=0)
        if not ready:
            return None
        try:
            pid, node, ip = ray.get(placed.where)
        except ray.exceptions.RayError:
            return None  # died before it answered
        return int(pid), str(node), str(ip)

    def release(self, pid: int) -> None:
        """Kill the worker actor whose process is ``pid`` (the coordinator gave it up)."""
        for placed in self.placed:
            where = self._where(placed)
            if where is not None and where[0] == pid:
                ray.kill(placed.actor, no_restart=True)

    def close(self, grace_s: float = 5.0) -> None:
        """Wait up to ``grace_s`` seconds for the workers to end, then kill the actors and
        remove the placement group."""
        self._closing.set()
        if self._watcher is not None:
            self._watcher.join()
            self._watcher = None
        if self.placed:
            ray.wait(
                [p.serving for p in self.placed], num_returns=len(self.placed), timeout=grace_s
            )
        for placed in self.placed:
            ray.kill(placed.actor, no_restart=True)
        self.placed = []
        if self._group is not None:
            remove_placement_group(self._group)
            self._group = None
