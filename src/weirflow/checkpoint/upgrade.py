"""Whether a checkpoint or savepoint restores into changed job code.

State maps to operators by name. Comparing the operators a manifest holds
state of with the operators of the job to start gives:

* **matched**: in both; their recorded signatures must agree on the key
  type (when both declare one), the window assigner, the state type and the
  kind of each state descriptor both declare, and a recorded state value
  class must restore into the new one
  (:func:`weirflow.serde.schema_check.schema_changes`). The states a keyed
  process function declared while it ran (also inside ``open``), recorded
  per task, are compared with the descriptors the new code holds as
  attributes; one the new code may create only inside ``open`` cannot be
  seen without running its code: it is reported *unchecked*, and the
  restore checks it when ``open`` declares it;
* **added**: stateful operators the manifest has no state of; they start empty;
* **dropped**: operators the manifest holds state of that the job no longer
  has; refused unless the caller allows non-restored state (Flink's
  ``--allowNonRestoredState``), which then leaves that state behind.

A job restored from a savepoint must name its stateful operators
(``name=``): a default name (``window_3``) depends on the operator's position
in the graph, which any upgrade may change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import msgspec

from weirflow.checkpoint.handles import TaskSnapshot
from weirflow.checkpoint.manifest import Manifest
from weirflow.serde.schema_check import (
    StateRecord,
    key_class_change,
    schema_changes,
    state_changes,
)

Signatures = Mapping[str, Mapping[str, str | None]]
_COMPARED = (("kind", "kind"), ("key_type", "key type"), ("window", "window assigner"),
             ("state_type", "state type"))  # fmt: skip


@dataclass(frozen=True)
class Incompatibility:
    """One change that makes a restore fail.

    Attributes:
        operator: the operator's name.
        change: what changed, ``"<what>: <old> -> <new>"`` or a requirement.
    """

    operator: str
    change: str

    def __str__(self) -> str:
        return f"operator {self.operator!r}: {self.change}"


@dataclass(frozen=True)
class UpgradeReport:
    """What a restore of a manifest into a job would do.

    Attributes:
        matched: operators whose state is restored, sorted.
        added: stateful operators that start empty, sorted.
        dropped: operators with state in the manifest that the job lacks, sorted.
        incompatible: changes that refuse the restore.
        signatures_recorded: whether the manifest recorded operator signatures
            (manifests of older versions did not; only names are compared then).
        unchecked: states recorded in the manifest that the new code holds no
            descriptor of as an attribute (``operator 'x': state 'y' (kind)``):
            only the restore can check them, when the function's ``open``
            declares them.
    """

    matched: list[str]
    added: list[str]
    dropped: list[str]
    incompatible: list[Incompatibility]
    signatures_recorded: bool
    unchecked: list[str] = dataclasses.field(default_factory=list)

    def problems(self, allow_non_restored_state: bool) -> list[str]:
        """Every reason the restore is refused, one line each (empty: it succeeds)."""
        found = [str(i) for i in self.incompatible]
        if self.dropped and not allow_non_restored_state:
            found.append(
                f"state of operator(s) {self.dropped} has no operator in the job: keep their "
                "names, or leave their state behind with --allow-non-restored-state"
            )
        return found


def state_holders(manifest: Manifest) -> set[str]:
    """Names of the operators ``manifest`` holds state of."""
    names = set(manifest.operators)
    for task in manifest.tasks.values():
        names |= set(task.metadata.get("operators", {}))
    return names


def compare_operators(
    manifest: Manifest, operators: Collection[str], signatures: Signatures
) -> UpgradeReport:
    """Compare ``manifest``'s operators with a job's.

    Args:
        manifest: the checkpoint or savepoint to restore.
        operators: the names of every operator of the job.
        signatures: the job's stateful operators' signatures
            (``weirflow.graph.operator_signatures``).

    Returns:
        The :class:`UpgradeReport`.
    """
    holders = state_holders(manifest)
    saved = manifest.operators
    incompatible: list[Incompatibility] = []
    for name in sorted(signatures):
        new = signatures[name]
        if manifest.is_savepoint and new.get("named") == "no":
            incompatible.append(
                Incompatibility(
                    name,
                    "a stateful operator restored from a savepoint needs a stable name: give it "
                    "name=... (its default name depends on its position in the job)",
                )
            )
        old = saved.get(name)
        if old is None:
            continue
        for field, what in _COMPARED:
            before, after = old.get(field), new.get(field)
            if field == "key_type" and (before is None or after is None):
                continue
            if before != after:
                incompatible.append(Incompatibility(name, f"{what} changed: {before} -> {after}"))
        for state, (before, after) in _kinds_changed(old.get("states"), new.get("states")):
            incompatible.append(
                Incompatibility(name, f"state descriptor {state!r} changed: {before} -> {after}")
            )
        for change in schema_changes(old.get("state_schema"), new.get("state_schema")):
            incompatible.append(Incompatibility(name, change))
        changed = key_class_change(old.get("key_schema"), new.get("key_schema"))
        if changed is not None:
            incompatible.append(Incompatibility(name, changed))
    unchecked: list[str] = []
    for name, recorded in sorted(_recorded_states(manifest).items()):
        new = signatures.get(name)
        if new is None:
            continue
        now = _decode_records(new.get("state_records"))
        for state, record in sorted(recorded.items()):
            if state not in now:
                unchecked.append(f"operator {name!r}: state {state!r} ({record.get('kind')})")
                continue
            incompatible += [
                Incompatibility(name, c) for c in state_changes(state, record, now[state])
            ]
    return UpgradeReport(
        matched=sorted(holders & set(operators)),
        added=sorted(set(signatures) - holders),
        dropped=sorted(holders - set(operators)),
        # a change both the signature and the recorded state show is named once
        incompatible=list(dict.fromkeys(incompatible)),
        signatures_recorded=bool(saved),
        unchecked=unchecked,
    )


def _recorded_states(manifest: Manifest) -> dict[str, dict[str, dict[str, str | None]]]:
    """The states each operator declared while it ran, from its tasks' metadata:
    operator -> state name -> :data:`~weirflow.serde.schema_check.StateRecord`."""
    found: dict[str, dict[str, dict[str, str | None]]] = {}
    for task in manifest.tasks.values():
        for name, meta in task.metadata.get("operators", {}).items():
            found.setdefault(name, {}).update(meta.get("states", {}))
    return {name: states for name, states in found.items() if states}


def _decode_records(text: str | None) -> dict[str, StateRecord]:
    if not text:
        return {}
    return msgspec.json.decode(text, type=dict[str, dict[str, str | None]])


def _kinds_changed(old: str | None, new: str | None) -> list[tuple[str, tuple[str, str]]]:
    """States both signatures declare whose kind (value, list, map) differs, sorted by name."""
    if not old or not new:
        return []
    before = msgspec.json.decode(old, type=dict[str, str])
    after = msgspec.json.decode(new, type=dict[str, str])
    return [(n, (k, after[n])) for n, k in sorted(before.items()) if after.get(n, k) != k]


def without_operators(manifest: Manifest, dropped: Collection[str]) -> Manifest:
    """``manifest`` with the state of the ``dropped`` operators left out."""
    gone = set(dropped)

    def keep(task: TaskSnapshot) -> TaskSnapshot:
        metadata = dict(task.metadata)
        metadata["operators"] = {
            k: v for k, v in metadata.get("operators", {}).items() if k not in gone
        }
        return dataclasses.replace(
            task,
            handles={k: h for k, h in task.handles.items() if k not in gone},
            metadata=metadata,
            pickled_states=frozenset(task.pickled_states - gone),
        )

    return dataclasses.replace(
        manifest,
        tasks={tid: keep(t) for tid, t in manifest.tasks.items()},
        operators={k: v for k, v in manifest.operators.items() if k not in gone},
    )
