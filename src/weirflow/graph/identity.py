"""Operator identity: what a checkpoint records about each stateful operator.

State maps to operators by their name (``name=`` in the job), never by
position. An operator's *signature* is the part of its description that
its state's meaning depends on; a restore into changed job code compares the
signatures recorded in the checkpoint with the job's (see
:mod:`weirflow.checkpoint.upgrade`). Signatures are plain data (strings or
``None``) so that manifests, which are never unpickled, can hold them.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import typing
from typing import Any

import msgspec

from weirflow.graph.logical import LogicalGraph, OperatorSpec
from weirflow.serde.schema_check import (
    TypedKeys,
    TypedState,
    schema_record,
    schema_records,
    state_record,
)

#: The operator kinds that hold keyed state.
STATEFUL_KINDS = frozenset({"rolling_reduce", "keyed_process", "window"})


def _type_name(tp: Any) -> str:
    # the class's name, not its module: a job file's module name follows its file name,
    # which a new version of the job may change
    return tp.__qualname__ if isinstance(tp, type) else str(tp)


def _key_annotation(op: OperatorSpec) -> Any:
    """The key selector's declared return type, or ``None`` when it declares none."""
    fn = op.key_fn
    if fn is None:
        return None
    try:
        annotation = inspect.signature(fn).return_annotation
    except (TypeError, ValueError):
        return None
    if isinstance(annotation, str):
        # a postponed annotation (``from __future__ import annotations``): the class it names
        with contextlib.suppress(NameError, TypeError):
            annotation = typing.get_type_hints(fn).get("return", annotation)
    return None if annotation is inspect.Signature.empty else annotation


def _key_type(op: OperatorSpec) -> str | None:
    """The key selector's declared return type's name, or ``None`` when it declares none."""
    annotation = _key_annotation(op)
    return None if annotation is None else _type_name(annotation)


def _state_type(op: OperatorSpec) -> str:
    fn = op.params.get("fn")
    kind = op.params.get("function", op.kind)
    if op.kind == "rolling_reduce" or kind in ("reduce", "count"):
        # the state is the reduced record itself, or a count
        return str(kind)
    return f"{kind}:{_type_name(type(fn))}"


def _declared_states(fn: Any) -> list[TypedState]:
    """The state descriptors a function holds as attributes, its own or its classes'."""
    found = list(getattr(fn, "__dict__", {}).values())
    for klass in type(fn).__mro__:
        found += vars(klass).values()
    return [d for d in found if isinstance(d, TypedState)]


def _state_schema(op: OperatorSpec) -> str | None:
    """The schema records of the operator's state value classes and of the classes nested in
    them (:func:`~weirflow.serde.schema_check.schema_records`): an aggregate's accumulator
    class, from the return annotation of its ``create_accumulator``; a keyed process
    function's descriptors' ``value_type`` and map descriptors' ``key_type``. ``None`` when
    it declares none."""
    fn = op.params.get("fn")
    roots: list[object] = []
    if op.params.get("function") == "aggregate":
        with contextlib.suppress(NameError, TypeError, AttributeError):
            roots.append(typing.get_type_hints(fn.create_accumulator).get("return"))
    elif op.kind == "keyed_process":
        for d in _declared_states(fn):
            roots += [d.value_type, d.key_type if isinstance(d, TypedKeys) else None]
    return schema_records(roots)


def _states(op: OperatorSpec) -> str | None:
    """A keyed process function's declared states, a JSON object of name → kind (``None``
    when it holds no descriptor as an attribute)."""
    if op.kind != "keyed_process":
        return None
    found = {d.name: d.kind for d in _declared_states(op.params.get("fn"))}
    return msgspec.json.encode(dict(sorted(found.items()))).decode() if found else None


def _state_records(op: OperatorSpec) -> str | None:
    """A keyed process function's descriptors held as attributes, a JSON object of name →
    :func:`~weirflow.serde.schema_check.state_record` (``None`` when it holds none)."""
    if op.kind != "keyed_process":
        return None
    found = {d.name: state_record(d) for d in _declared_states(op.params.get("fn"))}
    return msgspec.json.encode(dict(sorted(found.items()))).decode() if found else None


def is_named(op: OperatorSpec) -> bool:
    """Whether the job gave the operator a ``uid`` or a name (not the default ``<kind>_<id>``)."""
    return op.uid is not None or re.fullmatch(rf"{re.escape(op.kind)}_\d+", op.name) is None


def operator_signatures(graph: LogicalGraph) -> dict[str, dict[str, str | None]]:
    """Return the signature of every stateful operator of ``graph``, by state id (uid or name).

    A signature has ``kind``; ``key_type`` (the key selector's declared return
    type, ``None`` if undeclared); ``key_schema`` (its schema record when it is a
    Struct or dataclass, :func:`~weirflow.serde.schema_check.schema_record`); ``window``
    (the window assigner and its parameters, for windows); ``state_type`` (the window
    function or the keyed process function's class); ``state_schema`` (the schema records of the
    state value classes, nested ones included: an aggregate's accumulator, a process
    function's descriptors' ``value_type``, :func:`~weirflow.serde.schema_check.schema_records`);
    ``states`` (a keyed process function's descriptors held as attributes: name → kind, JSON);
    ``state_records`` (the same descriptors: name → kind and value schema, JSON; the
    states declared inside ``open`` are recorded by the running operator instead);
    ``named`` (``"yes"``/``"no"``).
    """
    out: dict[str, dict[str, str | None]] = {}
    for op in graph.operators:
        if op.kind not in STATEFUL_KINDS:
            continue
        assigner = op.params.get("assigner")
        out[op.state_id] = {
            "kind": op.kind,
            "key_type": _key_type(op),
            "key_schema": schema_record(_key_annotation(op)),
            "window": repr(assigner) if assigner is not None else None,
            "state_type": _state_type(op),
            "state_schema": _state_schema(op),
            "states": _states(op),
            "state_records": _state_records(op),
            "named": "yes" if is_named(op) else "no",
        }
    return out
