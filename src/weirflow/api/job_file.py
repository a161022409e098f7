"""Loading a user's dataflow from ``JOB.py[:NAME]``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from weirflow.api.dataflow import Dataflow
from weirflow.errors import ConfigError
from weirflow.graph import LogicalGraph


def load_dataflow(spec: str) -> Dataflow:
    """Import ``JOB.py`` and return its dataflow.

    Args:
        spec: ``path/to/job.py`` (the module's only ``Dataflow``) or
            ``path/to/job.py:NAME`` (the module variable ``NAME``).

    Returns:
        The :class:`~weirflow.Dataflow`.

    Raises:
        ConfigError: the file is missing, fails to import, or has no (or
            several, without ``:NAME``) dataflows.
    """
    path_s, _, name = spec.partition(":") if not Path(spec).exists() else (spec, "", "")
    path = Path(path_s)
    if not path.is_file():
        raise ConfigError(f"job file {path} not found; pass JOB.py or JOB.py:NAME")
    mod_name = f"weirflow_job_{path.stem}"
    loader_spec = importlib.util.spec_from_file_location(mod_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ConfigError(f"{path} is not a Python module")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[mod_name] = module
    sys.path.insert(0, str(path.resolve().parent))
    try:
        loader_spec.loader.exec_module(module)
    except Exception as e:
        raise ConfigError(f"importing {path} failed: {type(e).__name__}: {e}") from e
    if name:
        flow = getattr(module, name, None)
        if not isinstance(flow, Dataflow):
            raise ConfigError(f"{path} has no Dataflow named {name!r}")
        return flow
    flows = {k: v for k, v in vars(module).items() if isinstance(v, Dataflow)}
    if len(flows) != 1:
        found = ", ".join(sorted(flows)) or "none"
        raise ConfigError(
            f"{path} defines {len(flows)} Dataflow objects ({found}); name one as JOB.py:NAME"
        )
    return next(iter(flows.values()))


def load_graph(spec: str) -> LogicalGraph:
    """The logical graph of the dataflow that ``spec`` (``JOB.py[:NAME]``) names.

    Workers call this to build their subtasks; it is importable by reference,
    so a launcher can hand it to worker processes on other machines.

    Raises:
        ConfigError: as :func:`load_dataflow`.
    """
    return load_dataflow(spec).graph
