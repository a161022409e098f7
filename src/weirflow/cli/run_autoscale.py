"""``weirflow run --autoscale``: lag-driven rescaling, of one process or on workers.

A one-process job: the worker's :class:`Autoscaler` thread feeds the job's samples to an
:class:`~weirflow.metrics.autoscale.AutoscalePolicy`. On a decision it logs
it, counts it (``weirflow_autoscale_decisions_total``), leaves a
:class:`~weirflow.cli.supervisor.RescaleRequest` for the supervisor, and
stops the job, which takes a final checkpoint; the supervisor restores that
checkpoint at the new parallelism (see :mod:`weirflow.cli.supervisor`).
A job on workers: :class:`CoordinatorAutoscaler` decides on the coordinator's
view of the cluster, stops the run with a stop checkpoint, and the next run
restores it at the new parallelism on the workers it needs.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import typer

from weirflow.cli.durations import parse_duration
from weirflow.cli.supervisor import RescaleRequest, write_rescale_request
from weirflow.errors import ConfigError
from weirflow.metrics import JobRegistry, JobStatus, names
from weirflow.metrics.autoscale import AutoscaleConfig, AutoscalePolicy, Decision, Direction
from weirflow.runtime.cluster_metrics import ClusterSampler
from weirflow.runtime.coordinator import JobCoordinator
from weirflow.runtime.launched import CoordinatorWatch

log = logging.getLogger("weirflow.autoscale")

_PERIOD = timedelta(milliseconds=500)
_ITEM = re.compile(r"\s*(min|max|target-lag|cooldown|sustain)\s*=\s*(\S+)\s*")
_FORM = "min=1,max=N,target-lag=30s[,cooldown=5m][,sustain=1m]"


def parse_autoscale(text: str, parallelism: int) -> AutoscaleConfig:
    """Parse ``--autoscale min=1,max=N,target-lag=30s[,cooldown=5m][,sustain=1m]``.

    Raises:
        ConfigError: another form, bounds out of order, or ``parallelism`` outside them.
    """
    values: dict[str, str] = {}
    for item in text.split(","):
        m = _ITEM.fullmatch(item)
        if m is None:
            raise ConfigError(f"--autoscale {text!r}: write {_FORM}")
        values[m.group(1)] = m.group(2)
    if not {"min", "max", "target-lag"} <= values.keys():
        raise ConfigError(f"--autoscale {text!r}: min, max and target-lag are needed ({_FORM})")
    try:
        durations = {k: parse_duration(v) for k, v in values.items() if k not in ("min", "max")}
        config = AutoscaleConfig(
            min_parallelism=int(values["min"]),
            max_parallelism=int(values["max"]),
            target_lag=durations["target-lag"],
            cooldown=durations.get("cooldown", timedelta(minutes=5)),
            sustain=durations.get("sustain", timedelta(minutes=1)),
        )
    except (ValueError, typer.BadParameter) as e:
        raise ConfigError(f"--autoscale {text!r}: {e}") from e
    if not config.min_parallelism <= parallelism <= config.max_parallelism:
        raise ConfigError(
            f"--parallelism {parallelism} is outside --autoscale min={config.min_parallelism} "
            f"max={config.max_parallelism}"
        )
    return config


def announce(decision: Decision) -> None:
    """Log a decision (one line; its direction and parallelisms as fields)."""
    log.info(
        "autoscale %s: parallelism %d -> %d (%s; catch-up time %.1f s)",
        decision.direction.value,
        decision.parallelism,
        decision.target,
        decision.reason,
        decision.lag_s,
        extra={
            "fields": {
                "direction": decision.direction.value,
                "parallelism": decision.parallelism,
                "target": decision.target,
            }
        },
    )


class Autoscaler:
    """Watches a worker's job and asks the supervisor for a rescale (see the module).

    Args:
        config: bounds and pace.
        parallelism: the job's parallelism in this worker.
        status: the job's latest sample (any thread).
        metrics: the job's registry (the decision counter).
        clock: processing time in ms since the epoch.
        stop: set to stop the job (it takes a final checkpoint).

    Raises:
        ConfigError: the worker was not started by a supervisor (no request file).
    """

    def __init__(
        self,
        config: AutoscaleConfig,
        parallelism: int,
        status: Callable[[], JobStatus],
        metrics: JobRegistry,
        clock: Callable[[], int],
        stop: threading.Event,
    ) -> None:
        path = os.environ.get(names.ENV_AUTOSCALE_FILE)
        if not path:
            raise ConfigError("--autoscale needs the supervisor of `weirflow run`")
        self.path = Path(path)
        self.status = status
        self.metrics = metrics
        self.clock = clock
        self.stop = stop
        last_ms = int(os.environ.get(names.ENV_AUTOSCALE_LAST_MS, str(clock())))
        self.policy = AutoscalePolicy(config, parallelism, last_ms)
        for direction, env in (("up", names.ENV_AUTOSCALE_UP), ("down", names.ENV_AUTOSCALE_DOWN)):
            # earlier workers' decisions, so that the counter covers the whole run
            metrics.autoscale.labels(metrics.job, direction).inc(int(os.environ.get(env, "0")))
        self._thread = threading.Thread(target=self._run, daemon=True, name="weirflow-autoscale")

    def start(self) -> None:
        """Start watching."""
        self._thread.start()

    def _run(self) -> None:
        while not self.stop.wait(_PERIOD.total_seconds()):
            status = self.status()
            if status.sampled_ms == 0:
                continue
            now = self.clock()
            decision = self.policy.observe(status, now)
            if decision is None:
                continue
            announce(decision)
            self.metrics.autoscale.labels(self.metrics.job, decision.direction.value).inc()
            write_rescale_request(
                self.path, RescaleRequest(decision.target, decision.direction.value, now)
            )
            self.stop.set()
            return


class CoordinatorAutoscaler:
    """``--autoscale`` of a job on workers, decided on its coordinator's view.

    :meth:`watch` follows one coordinator's run (one run per parallelism): a
    thread feeds :class:`~weirflow.runtime.cluster_metrics.ClusterSampler`
    samples (the workers' split lag and read rate) to the policy, and on a
    decision logs it, counts it in ``coordinator.rescales`` (exported as
    ``weirflow_autoscale_decisions_total``) and sets the run's ``stop``: the job
    takes a stop checkpoint, and the caller restores it at :attr:`decision`'s
    target (see :func:`weirflow.cli.cluster.run_on_workers`).

    With ``capacity`` (a cluster whose workers were started beforehand: a
    ``weirflow coordinator``'s), a scale-up is bounded by the slots the
    workers offer; one with no slot to grow into is logged and skipped, and
    the policy waits a cool-down before it decides again, since a run at a
    parallelism the slots cannot hold would wait for them and then fail.

    Args:
        config: bounds and pace.
        parallelism: the job's first parallelism.
        clock: processing time in ms since the epoch.
        capacity: the slots of the coordinator's workers, or ``None`` when the
            launcher starts the workers a run needs.
    """

    def __init__(
        self,
        config: AutoscaleConfig,
        parallelism: int,
        clock: Callable[[], int],
        capacity: Callable[[JobCoordinator], int] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.capacity = capacity
        self.policy = AutoscalePolicy(config, parallelism, clock())
        self.decision: Decision | None = None
        self.rescales: dict[str, int] = {}

    def _within_capacity(self, decision: Decision, coordinator: JobCoordinator) -> Decision | None:
        """``decision`` bounded by the workers' slots; ``None`` when it cannot grow at all."""
        if self.capacity is None or decision.direction is not Direction.UP:
            return decision
        slots = self.capacity(coordinator)
        if slots >= decision.target:
            return decision
        if slots <= decision.parallelism:
            log.info(
                "autoscale up skipped: parallelism %d, the workers offer %d slots (%s)",
                decision.parallelism,
                slots,
                decision.reason,
            )
            self.policy = AutoscalePolicy(self.config, decision.parallelism, self.clock())
            return None
        return dataclasses.replace(decision, target=slots)

    def watch(self, job: str, stop: threading.Event) -> CoordinatorWatch:
        """A watch of one run of ``job``, which ``stop`` stops."""

        def start(coordinator: JobCoordinator) -> Callable[[], None]:
            coordinator.rescales = self.rescales
            sampler = ClusterSampler(coordinator, job, self.clock)
            ended = threading.Event()

            def run() -> None:
                while not ended.wait(_PERIOD.total_seconds()) and self.decision is None:
                    status = sampler.status()
                    if not status.split_lag:
                        # no source subtask reports yet (workers starting, restoring): an
                        # empty sample says nothing, least of all that nothing waits
                        continue
                    decision = self.policy.observe(status, self.clock())
                    if decision is not None:
                        decision = self._within_capacity(decision, coordinator)
                    if decision is not None:
                        announce(decision)
                        direction = decision.direction.value
                        self.rescales[direction] = self.rescales.get(direction, 0) + 1
                        self.decision = decision
                        stop.set()

            thread = threading.Thread(target=run, daemon=True, name="weirflow-autoscale")
            thread.start()

            def end() -> None:
                ended.set()
                thread.join()

            return end

        return start

    def take(self) -> Decision | None:
        """The decision of the run that just ended, or ``None``; the policy then watches the
        new parallelism, its cool-down starting now."""
        decision, self.decision = self.decision, None
        if decision is not None:
            self.policy = AutoscalePolicy(self.config, decision.target, self.clock())
        return decision
