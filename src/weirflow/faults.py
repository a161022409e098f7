"""Fault points: places where a crash test may SIGKILL the current process.

A recovery test sets ``WEIRFLOW_FAULTS`` in a worker's environment, e.g.
``"after_manifest=0.2,sink_commit=0.1"`` (point name = probability per
visit) and optionally ``WEIRFLOW_FAULT_SEED``. Each visit of a listed point
draws from a seeded generator and, when it hits, the process kills itself
with SIGKILL: a real crash at a chosen phase of the checkpoint protocol, not
a simulated one. Unset (the normal case) every point is a dictionary lookup.

Points: ``state_write`` (writer thread, before a task's state files are
written), ``after_manifest`` (a checkpoint completed, before tasks are
notified), ``sink_commit`` (before a sink commits a checkpoint's
transactions), ``pre_commit`` (a sink is about to prepare on a barrier),
``replay_commit`` (``weirflow dlq replay`` wrote its transaction and is about
to commit it).
"""

from __future__ import annotations

import os
import random
import signal

POINTS = ("state_write", "after_manifest", "sink_commit", "pre_commit", "replay_commit")


def _parse(spec: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, prob = part.partition("=")
        if name not in POINTS:
            raise ValueError(f"WEIRFLOW_FAULTS: unknown fault point {name!r}; known: {POINTS}")
        out[name] = float(prob or 1.0)
    return out


_faults = _parse(os.environ.get("WEIRFLOW_FAULTS", ""))
_rng = random.Random(int(os.environ.get("WEIRFLOW_FAULT_SEED", "0")) ^ os.getpid())


def fault_point(name: str) -> None:
    """Maybe SIGKILL this process here (only when ``WEIRFLOW_FAULTS`` lists ``name``)."""
    p = _faults.get(name)
    if p is not None and _rng.random() < p:
        os.kill(os.getpid(), signal.SIGKILL)
