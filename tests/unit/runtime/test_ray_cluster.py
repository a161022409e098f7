"""RayCluster's checks and where the workers find the job's files (no Ray started)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from weirflow import ConfigError, Dataflow, RayCluster
from weirflow.runtime import run_job
from weirflow.runtime.ray_cluster import job_files


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"workers": 0}, "workers takes a count"),
        ({"placement": "scatter"}, "spread or pack"),
        ({"worker_resources": {"CPU": 2}}, "takes no CPU"),
        ({"worker_wait": timedelta(0)}, "worker_wait must be positive"),
    ],
)
def test_bad_fields_are_refused(kwargs: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        RayCluster(**kwargs)


def test_job_travels_as_its_folder_and_a_relative_name(tmp_path: Path) -> None:
    job = tmp_path / "jobs" / "job.py"
    job.parent.mkdir()
    job.write_text("")
    assert job_files(f"{job}:flow", {}) == (str(job.parent), "job.py:flow")
    assert job_files(str(job), {"working_dir": str(tmp_path)}) == (str(tmp_path), "jobs/job.py")


def test_working_dir_must_contain_the_job(tmp_path: Path) -> None:
    (tmp_path / "job.py").write_text("")
    (tmp_path / "other").mkdir()
    with pytest.raises(ConfigError, match="does not contain the job file"):
        job_files(str(tmp_path / "job.py"), {"working_dir": str(tmp_path / "other")})


def test_cluster_takes_its_worker_count_itself() -> None:
    with pytest.raises(ConfigError, match=r"RayCluster\(workers=N\)"):
        run_job(Dataflow("f").graph, 2, 128, workers=2, cluster=RayCluster(workers=2), job="x.py")


def test_worker_actors_ask_their_slots_and_are_never_restarted_by_ray() -> None:
    """A worker actor asks one CPU per slot plus its resources, and Ray never restarts it:
    weirflow replaces a lost worker itself, so none comes back holding an older attempt."""
    pytest.importorskip("ray")
    from weirflow.runtime.ray_launcher import WorkerShape

    shape = WorkerShape(2, {"GPU": 1, "memory": 2**30, "fpga": 0.5})
    assert shape.bundle() == {"CPU": 2.0, "GPU": 1, "memory": 2**30, "fpga": 0.5}
    options = shape.actor_options()
    assert options["max_restarts"] == 0
    assert (options["num_cpus"], options["num_gpus"], options["memory"]) == (2, 1, 2**30)
    assert options["resources"] == {"fpga": 0.5}
