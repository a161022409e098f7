"""``weirflow checkpoints list|inspect`` on checkpoints of a real job, and corrupted copies."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from weirflow import CheckpointConfig, Dataflow, WatermarkStrategy
from weirflow.checkpoint import CheckpointStorage
from weirflow.cli import app
from weirflow.cli.checkpoints import count_committables, format_size, format_time_ms
from weirflow.connectors import FileSink, IterableSource
from weirflow.windows import TumblingWindows

runner = CliRunner()


def invoke(*args: str, code: int = 0) -> Result:
    result = runner.invoke(app, ["checkpoints", *args], env={"COLUMNS": "400"})
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    return result


@pytest.fixture(scope="module")
def chk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint folder holding two or more checkpoints of job ``tiny`` (windows, FileSink)."""
    root = tmp_path_factory.mktemp("chk")
    flow = Dataflow("tiny")
    (
        flow.source(
            IterableSource([{"u": f"u{i % 5}", "ts": i} for i in range(20_000)], partitions=2),
            watermarks=WatermarkStrategy.bounded_out_of_orderness(timedelta(0)),
            timestamp=lambda e: e["ts"],
            name="numbers",
        )
        .key_by(lambda e: e["u"])
        .window(TumblingWindows(size=timedelta(milliseconds=100)))
        .count(name="counts")
        .sink(FileSink(root / "out"), name="files")
    )
    config = CheckpointConfig(storage=str(root / "store"), interval=timedelta(milliseconds=1))
    result = flow.run(parallelism=2, checkpoint=config)
    assert result.checkpoints_completed >= 2
    return root / "store"


def storage(folder: Path, job: str = "tiny") -> CheckpointStorage:
    return CheckpointStorage(str(folder), job)


def test_list_without_job_lists_the_jobs(chk: Path, tmp_path: Path) -> None:
    shutil.copytree(chk / "tiny", tmp_path / "tiny")
    shutil.copytree(chk / "tiny", tmp_path / "other")
    (tmp_path / "not-a-job").mkdir()
    out = invoke("list", "--checkpoint-dir", str(tmp_path)).stdout
    ids = storage(tmp_path).completed_checkpoints()
    rows = [[c.strip() for c in line.split("│")] for line in out.splitlines() if "│" in line]
    assert [r[:3] for r in rows] == [
        ["other", str(len(ids)), str(ids[-1])],
        ["tiny", str(len(ids)), str(ids[-1])],
    ]
    assert "not-a-job" not in out


def test_list_shows_every_completed_checkpoint(chk: Path) -> None:
    out = invoke("list", "--checkpoint-dir", str(chk), "--job", "tiny").stdout
    st = storage(chk)
    ids = st.completed_checkpoints()
    rows = [line.split("│") for line in out.splitlines() if "│" in line]
    assert [int(r[0]) for r in rows] == ids
    for row, checkpoint_id in zip(rows, ids, strict=True):
        m = st.load_manifest(checkpoint_id)
        cells = [c.strip() for c in row]
        assert cells[1:6] == [
            "ok",
            format_time_ms(m.completed_timestamp_ms),
            f"{m.duration_ms} ms",
            format_size(m.size),
            "no",
        ]


def test_list_shows_a_savepoint(chk: Path, tmp_path: Path) -> None:
    shutil.copytree(chk / "tiny", tmp_path / "tiny")
    st = storage(tmp_path)
    first = st.completed_checkpoints()[0]
    url = st.write_savepoint(st.load_manifest(first), st.default_savepoint_url(first))
    out = invoke("list", "--checkpoint-dir", str(tmp_path), "--job", "tiny").stdout
    rows = [[c.strip() for c in line.split("│")] for line in out.splitlines() if "│" in line]
    assert rows[-1] == [str(first), "ok", rows[-1][2], rows[-1][3], rows[-1][4], "yes"]
    assert [r[5] for r in rows[:-1]] == ["no"] * len(st.completed_checkpoints())
    assert f"savepoint {first} is at {url}" in out.splitlines()


def test_corrupt_checkpoints_are_listed_with_path_and_reason(chk: Path, tmp_path: Path) -> None:
    """Scenario: a state file of one checkpoint and the manifest of another are damaged."""
    shutil.copytree(chk / "tiny", tmp_path / "tiny")
    st = storage(tmp_path)
    ids = st.completed_checkpoints()
    state_file = sorted(
        p for p in (tmp_path / "tiny" / f"chk-{ids[-1]}").iterdir() if p.name != "_manifest"
    )[0]
    state_file.write_bytes(state_file.read_bytes()[:-3] + b"xyz")
    manifest = tmp_path / "tiny" / f"chk-{ids[0]}" / "_manifest"
    manifest.write_text(manifest.read_text().replace('"mode": "exactly_once"', '"mode": "x"'))
    result = invoke("list", "--checkpoint-dir", str(tmp_path), "--job", "tiny", code=1)
    rows = {int(line.split("│")[0]): line for line in result.stdout.splitlines() if "│" in line}
    assert rows[ids[-1]].split("│")[1].strip() == "corrupt"
    assert rows[ids[0]].split("│")[1].strip() == "corrupt"
    assert [r.split("│")[1].strip() for r in rows.values()].count("ok") == len(ids) - 2
    notes = [line for line in result.stdout.splitlines() if "is corrupt" in line]
    assert notes == [
        f"checkpoint {ids[0]} is corrupt: {manifest.as_uri()}: checksum mismatch: the manifest "
        "was altered",
        f"checkpoint {ids[-1]} is corrupt: {state_file.as_uri()}: checksum mismatch: the payload "
        "was altered",
    ]
    assert result.stderr == (
        f"error: 2 of {len(ids)} checkpoints and savepoints of job 'tiny' are corrupt: "
        f"{ids[0]}, {ids[-1]}\n"
    )
    assert "Traceback" not in result.stdout + result.stderr


def test_list_of_jobs_exits_1_when_a_latest_checkpoint_is_corrupt(
    chk: Path, tmp_path: Path
) -> None:
    shutil.copytree(chk / "tiny", tmp_path / "tiny")
    last = storage(tmp_path).completed_checkpoints()[-1]
    (tmp_path / "tiny" / f"chk-{last}" / "_manifest").write_text("{}")
    result = invoke("list", "--checkpoint-dir", str(tmp_path), code=1)
    assert f"job tiny checkpoint {last}:" in result.stderr
    assert "not a weirflow manifest" in result.stderr


def test_no_verify_reads_manifests_only(chk: Path, tmp_path: Path) -> None:
    shutil.copytree(chk / "tiny", tmp_path / "tiny")
    ids = storage(tmp_path).completed_checkpoints()
    state_file = sorted(
        p for p in (tmp_path / "tiny" / f"chk-{ids[-1]}").iterdir() if p.name != "_manifest"
    )[0]
    state_file.write_bytes(b"garbage")
    out = invoke("list", "--checkpoint-dir", str(tmp_path), "--job", "tiny", "--no-verify").stdout
    assert "corrupt" not in out
    assert out.count("manifest ok") == len(ids)


def test_inspect_shows_tasks_operators_positions_and_committables(chk: Path) -> None:
    st = storage(chk)
    checkpoint_id = st.completed_checkpoints()[0]
    m = st.load_manifest(checkpoint_id)
    out = invoke("inspect", str(checkpoint_id), "--checkpoint-dir", str(chk)).stdout
    assert f"checkpoint {checkpoint_id} of job tiny" in out
    assert not m.uses_pickle
    assert "uses pickle     │ no" in out
    # The library run generated the job's key file next to the folder; inspect finds it.
    key_file = chk.parent / "checkpoint-keys" / "tiny.key"
    assert f"signatures: verified with the checkpoint key from {key_file}" in out
    rows = {
        (cells[0], cells[1]): cells
        for cells in ([c.strip() for c in line.split("│")] for line in out.splitlines())
        if len(cells) == 8
    }
    seen = 0
    for task_id, task in m.tasks.items():
        for name, meta in task.metadata["operators"].items():
            cells = rows[(task_id, name)]
            seen += 1
            if name == "numbers":
                positions = ", ".join(f"{s}={p}" for s, p in meta["state"]["positions"].items())
                assert cells[2] == "source" and cells[3].endswith(" inline")
                assert cells[4:6] == ["", positions]
            elif name == "files":
                assert cells[2] == "sink"
                assert cells[6] == str(len(meta["state"]["pending"]))
            else:
                start, end = meta["key_group_range"]
                assert cells[2] == "keyed"
                assert cells[3] == format_size(task.handles[name].size)
                assert cells[4] == f"{len(meta['key_groups'])} in [{start}, {end})"
    assert seen == len(rows) == 6


def test_inspect_latest_skips_a_corrupt_newest_checkpoint(chk: Path, tmp_path: Path) -> None:
    """Scenario: the newest checkpoint lost a state file; latest falls back with a warning."""
    shutil.copytree(chk / "tiny", tmp_path / "tiny")
    ids = storage(tmp_path).completed_checkpoints()
    for f in (tmp_path / "tiny" / f"chk-{ids[-1]}").iterdir():
        if f.name == "_manifest":
            continue
        f.unlink()
    result = invoke("inspect", "latest", "--checkpoint-dir", str(tmp_path))
    assert f"checkpoint {ids[-2]} of job tiny" in result.stdout
    assert "warning: skipped unusable checkpoint" in result.stderr


def test_inspect_of_a_corrupt_checkpoint_is_one_line_and_exit_2(chk: Path, tmp_path: Path) -> None:
    shutil.copytree(chk / "tiny", tmp_path / "tiny")
    first = storage(tmp_path).completed_checkpoints()[0]
    manifest = tmp_path / "tiny" / f"chk-{first}" / "_manifest"
    manifest.write_bytes(b"{not json")
    result = invoke("inspect", str(first), "--checkpoint-dir", str(tmp_path), code=2)
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: checkpoint file {manifest.as_uri()}")
    assert "not a JSON manifest" in result.stderr
    debug = runner.invoke(
        app, ["checkpoints", "inspect", str(first), "--checkpoint-dir", str(tmp_path), "--debug"]
    )
    assert debug.exit_code != 0 and debug.exception is not None
    assert type(debug.exception).__name__ == "CheckpointCorruptError"


def test_unknown_job_and_ambiguous_job_are_errors(chk: Path, tmp_path: Path) -> None:
    shutil.copytree(chk / "tiny", tmp_path / "a")
    shutil.copytree(chk / "tiny", tmp_path / "b")
    r = invoke("list", "--checkpoint-dir", str(tmp_path), "--job", "zzz", code=2)
    assert r.stderr == f"error: job 'zzz' has no checkpoints under {tmp_path} (jobs there: a, b)\n"
    r = invoke("inspect", "--checkpoint-dir", str(tmp_path), code=2)
    assert "2 jobs under" in r.stderr and "--job" in r.stderr
    r = invoke("inspect", "12345", "--checkpoint-dir", str(tmp_path), "--job", "a", code=2)
    assert "no completed checkpoint 12345" in r.stderr
    r = invoke("list", "--checkpoint-dir", str(tmp_path / "empty"), code=2)
    assert r.stderr.startswith("error: no job checkpoints under")
    r = invoke("list", "--checkpoint-dir", "nosuch://x", code=2)
    assert r.stderr.startswith("error: ") and "nosuch" in r.stderr and r.stderr.count("\n") == 1


def test_inspect_a_savepoint_by_path(chk: Path, tmp_path: Path) -> None:
    st = storage(chk)
    first = st.completed_checkpoints()[0]
    url = st.write_savepoint(st.load_manifest(first), str(tmp_path / "sp"))
    out = invoke("inspect", str(tmp_path / "sp")).stdout
    assert f"savepoint {first} of job tiny" in out
    assert url.endswith("/sp")


def test_helpers() -> None:
    assert format_size(975) == "975 B"
    assert format_size(8015) == "7.8 KiB"
    assert format_size(3 * 1024**3) == "3.0 GiB"
    assert format_time_ms(1_795_568_607_768) == "2026-11-25 01:03:27.768Z"
    assert count_committables(None) == 0
    assert count_committables({"checkpoint": 3, "pending": ["a", "b"]}) == 2
    assert count_committables({"prepared": [{"x": 1}]}) == 1
    assert count_committables([1, 2, 3]) == 3
