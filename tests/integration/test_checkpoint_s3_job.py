"""A whole job checkpointing to S3 (a moto server on 127.0.0.1): stop, rescale, resume, exact."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install -e .[dev])")
s3fs = pytest.importorskip("s3fs", reason="s3fs is not installed (pip install -e .[s3])")

from test_checkpoint_rescale import _flow, _input, _read  # noqa: E402
from test_checkpoint_s3 import endpoint, options  # noqa: E402, F401

from weirflow import CheckpointConfig  # noqa: E402
from weirflow.runtime import CheckpointedRun, RuntimeOptions, wall_clock_ms  # noqa: E402


def _run(log: Path, url: str, opts: dict, parallelism: int, restore: str | None, stop_after):
    stop = threading.Event()
    run = CheckpointedRun(
        _flow(log).graph,
        parallelism,
        128,
        CheckpointConfig(storage=url, interval=timedelta(milliseconds=100)),
        restore=restore,
        options=RuntimeOptions(source_batch_size=64),
        clock=wall_clock_ms,
        sleep=time.sleep,
        stop=stop,
        storage_options=opts,
    )
    if stop_after is not None:

        def hook(scheduler):  # type: ignore[no-untyped-def]
            scheduler.hooks.before_round.append(
                lambda now: stop.set() if scheduler.rounds >= stop_after else False
            )

        run.scheduler_hook = hook
    return run.run()


def test_job_checkpoints_to_s3_and_resumes_at_another_parallelism(
    tmp_path: Path,
    endpoint: str,  # noqa: F811
) -> None:
    """Scenario: checkpoints on S3; stop at parallelism 2, resume at 3: equals a straight run."""
    opts = options(endpoint)
    bucket = f"wf-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(**opts).mkdir(bucket)
    url = f"s3://{bucket}/checkpoints"
    straight = tmp_path / "straight"
    _input(straight)
    _run(straight, f"{tmp_path}/chk-straight", {}, 1, None, None)
    log = tmp_path / "log"
    _input(log)
    first = _run(log, url, opts, 2, None, stop_after=40)
    assert first.checkpoints_completed >= 1
    second = _run(log, url, opts, 3, "latest", None)
    assert second.checkpoints_completed >= 1
    fs = s3fs.S3FileSystem(**opts)
    assert fs.glob(f"{bucket}/checkpoints/rescale/chk-*/_manifest"), "no manifest on S3"
    for topic in ("tumbling", "sliding", "sessions", "totals"):
        assert _read(log, topic) == _read(straight, topic), topic
