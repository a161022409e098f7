"""FileSink: the part-file state machine (write, pre-commit, commit, restore, abort), formats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from weirflow.connectors import FileSink, FileSinkError, refuse_commits_after
from weirflow.connectors.files import FileSinkWriter, PartFile, PartState
from weirflow.errors import ConfigError, DuplicateOutputError


def visible(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if not n.startswith("."))


def hidden(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith("."))


def records(folder: Path) -> list[Any]:
    out = []
    for name in visible(folder):
        with open(folder / name) as f:
            out.extend(json.loads(line) for line in f)
    return out


def writer(
    sink: FileSink, subtask: int = 0, parallelism: int = 1, restored: Any = None
) -> FileSinkWriter:
    return sink.create_writer("job", "out", subtask, parallelism, restored)


def test_records_become_visible_only_on_commit(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    w = writer(sink)
    w.write([{"a": 1}, {"a": 2}], None)
    assert visible(tmp_path) == []
    state = w.pre_commit(1)
    assert state == {"checkpoint": 1, "pending": ["part-0-1.jsonl"]}
    assert visible(tmp_path) == []
    assert hidden(tmp_path) == [".part-0-1.jsonl.pending"]
    w.commit(1)
    assert visible(tmp_path) == ["part-0-1.jsonl"]
    assert hidden(tmp_path) == []
    assert records(tmp_path) == [{"a": 1}, {"a": 2}]
    w.close()


def test_commit_covers_every_checkpoint_up_to_its_id(tmp_path: Path) -> None:
    w = writer(FileSink(tmp_path))
    w.write([1], None)
    w.pre_commit(1)
    w.write([2], None)
    state = w.pre_commit(2)
    assert state["pending"] == ["part-0-1.jsonl", "part-0-2.jsonl"]
    w.write([3], None)
    assert w.pre_commit(3)["pending"] == ["part-0-1.jsonl", "part-0-2.jsonl", "part-0-3.jsonl"]
    w.commit(2)
    assert visible(tmp_path) == ["part-0-1.jsonl", "part-0-2.jsonl"]
    assert w.pre_commit(4)["pending"] == ["part-0-3.jsonl"]
    w.close()


def test_commit_is_idempotent(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    w = writer(sink)
    w.write(["x"], None)
    state = w.pre_commit(1)
    w.commit(1)
    w.commit(1)
    w.close()
    again = writer(sink, restored={0: state})
    assert visible(tmp_path) == ["part-0-1.jsonl"]
    assert records(tmp_path) == ["x"]
    again.close()


def test_empty_interval_writes_no_file(tmp_path: Path) -> None:
    w = writer(FileSink(tmp_path))
    assert w.pre_commit(1) == {"checkpoint": 1, "pending": []}
    w.commit(1)
    assert os.listdir(tmp_path) == []
    w.close()


def test_restore_commits_restored_pending_and_deletes_newer_files(tmp_path: Path) -> None:
    """Scenario: crash after pre-commit of 1 (never committed), pre-commit of 2 and more writes."""
    sink = FileSink(tmp_path)
    w = writer(sink)
    w.write(["a"], None)
    state_1 = w.pre_commit(1)
    w.write(["b"], None)
    w.pre_commit(2)
    w.write(["c"], None)
    w.close()
    assert hidden(tmp_path) == [
        ".part-0-1.jsonl.pending",
        ".part-0-2.jsonl.inprogress",
        ".part-0-2.jsonl.pending",
    ]
    restored = writer(sink, restored={0: state_1})
    assert visible(tmp_path) == ["part-0-1.jsonl"]
    assert hidden(tmp_path) == []
    assert records(tmp_path) == ["a"]
    restored.write(["b"], None)
    restored.pre_commit(2)
    restored.commit(2)
    assert records(tmp_path) == ["a", "b"]
    restored.close()


def test_fresh_start_aborts_everything_hidden(tmp_path: Path) -> None:
    """Scenario: crash before the first checkpoint completed; the restart starts fresh."""
    sink = FileSink(tmp_path)
    w = writer(sink)
    w.write(["a"], None)
    w.pre_commit(1)
    w.write(["b"], None)
    w.close()
    assert len(hidden(tmp_path)) == 2
    again = writer(sink, restored=None)
    assert os.listdir(tmp_path) == []
    again.close()


def test_restore_leaves_other_subtasks_files_alone(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    w0, w1 = writer(sink, 0, 2), writer(sink, 1, 2)
    w1.write(["one"], None)
    w1.pre_commit(1)
    writer(sink, 0, 2, restored={0: None}).close()
    assert hidden(tmp_path) == [".part-1-1.jsonl.pending"]
    w0.close()
    w1.close()


def test_rescaling_restore_from_four_subtasks_to_two(tmp_path: Path) -> None:
    """Scenario: four subtasks pre-commit 1, write on, crash; the job restores at parallelism 2."""
    sink = FileSink(tmp_path)
    states = {}
    for s in range(4):
        w = writer(sink, s, 4)
        w.write([f"{s}-a", f"{s}-b"], None)
        states[s] = w.pre_commit(1)
        w.write([f"{s}-late"], None)
        w.pre_commit(2)
        w.write([f"{s}-later"], None)
        w.close()
    assert visible(tmp_path) == []
    new = [
        writer(sink, i, 2, restored={j: states[j] for j in range(4) if j % 2 == i})
        for i in range(2)
    ]
    assert visible(tmp_path) == [f"part-{s}-1.jsonl" for s in range(4)]
    assert hidden(tmp_path) == []
    assert sorted(records(tmp_path)) == sorted(f"{s}-{x}" for s in range(4) for x in "ab")
    for w in new:
        w.close()


def test_rescaling_restore_from_two_subtasks_to_four(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    states = {}
    for s in range(2):
        w = writer(sink, s, 2)
        w.write([s], None)
        states[s] = w.pre_commit(3)
        w.write([s + 10], None)
        w.close()
    new = [
        writer(sink, i, 4, restored={j: states[j] for j in range(2) if j % 4 == i})
        for i in range(4)
    ]
    assert sorted(records(tmp_path)) == [0, 1]
    assert hidden(tmp_path) == []
    for w in new:
        w.close()


def test_restore_with_missing_pending_file_refuses(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    w = writer(sink)
    w.write(["a"], None)
    state = w.pre_commit(1)
    w.close()
    os.unlink(tmp_path / ".part-0-1.jsonl.pending")
    with pytest.raises(FileSinkError, match=r"part-0-1\.jsonl.*lost"):
        writer(sink, restored={0: state})


def test_committed_part_is_never_overwritten(tmp_path: Path) -> None:
    """Scenario: a second writer (restored, so not refused at start) commits onto part-0-0."""
    sink = FileSink(tmp_path)
    w = writer(sink)
    w.write(["first"], None)
    w.finish()
    w.close()
    w2 = writer(sink, restored={})
    w2.write(["second"], None)
    with pytest.raises(FileSinkError, match="already exists"):
        w2.finish()
    w2.close()
    assert records(tmp_path) == ["first"]


def test_a_fresh_start_refuses_a_folder_with_earlier_output(tmp_path: Path) -> None:
    """Scenario: a fresh run into a folder holding committed parts fails at once, clearly."""
    sink = FileSink(tmp_path)
    w = writer(sink)
    w.write(["first"], None)
    w.finish()
    w.close()
    with pytest.raises(ConfigError, match="output of an earlier run"):
        writer(sink)
    assert records(tmp_path) == ["first"]


def test_finish_without_checkpoints_commits_as_checkpoint_zero(tmp_path: Path) -> None:
    w = writer(FileSink(tmp_path), 3, 4)
    w.write([{"k": "v"}], None)
    w.finish()
    assert visible(tmp_path) == ["part-3-0.jsonl"]
    assert hidden(tmp_path) == []
    w.close()


def test_rolling_records_splits_an_interval_into_several_parts(tmp_path: Path) -> None:
    w = writer(FileSink(tmp_path, rolling_records=3))
    w.write(list(range(5)), None)
    w.write(list(range(5, 8)), None)
    state = w.pre_commit(7)
    assert state["pending"] == ["part-0-7.jsonl", "part-0-7-1.jsonl", "part-0-7-2.jsonl"]
    w.commit(7)
    sizes = {n: len((tmp_path / n).read_text().splitlines()) for n in visible(tmp_path)}
    assert sizes == {"part-0-7.jsonl": 3, "part-0-7-1.jsonl": 3, "part-0-7-2.jsonl": 2}
    assert sorted(records(tmp_path)) == list(range(8))
    w.close()


def test_jsonl_custom_encode(tmp_path: Path) -> None:
    w = writer(FileSink(tmp_path, encode=lambda r: f'{{"v": {r * 2}}}'))
    w.write([1, 2], None)
    w.finish()
    assert records(tmp_path) == [{"v": 2}, {"v": 4}]
    w.close()


def test_jsonl_line_with_newline_is_refused(tmp_path: Path) -> None:
    w = writer(FileSink(tmp_path, encode=lambda r: "a\nb"))
    with pytest.raises(FileSinkError, match="newline"):
        w.write([1], None)
    w.close()


def test_csv_has_one_header_per_file(tmp_path: Path) -> None:
    w = writer(FileSink(tmp_path, format="csv", rolling_records=2))
    w.write([{"a": 1, "b": "x,y"}, {"a": 2}, {"b": 3, "a": 4}], None)
    w.finish()
    assert visible(tmp_path) == ["part-0-0-1.csv", "part-0-0.csv"]
    assert (tmp_path / "part-0-0.csv").read_text() == 'a,b\n1,"x,y"\n2,\n'
    assert (tmp_path / "part-0-0-1.csv").read_text() == "b,a\n3,4\n"
    w.close()


def test_csv_columns_and_sequence_rows(tmp_path: Path) -> None:
    w = writer(FileSink(tmp_path, format="csv", columns=["k", "n"], encode=lambda r: (r, r * r)))
    w.write([2, 3], None)
    w.finish()
    assert (tmp_path / "part-0-0.csv").read_text() == "k,n\n2,4\n3,9\n"
    w.close()


def test_csv_row_errors_name_the_file(tmp_path: Path) -> None:
    w = writer(FileSink(tmp_path, format="csv", columns=["a"]))
    with pytest.raises(FileSinkError, match=r"part-0-0\.csv\.inprogress.*outside the header"):
        w.write([{"a": 1, "z": 2}], None)
    w.close()
    w2 = writer(FileSink(tmp_path / "seq", format="csv"))
    with pytest.raises(FileSinkError, match="must be mappings"):
        w2.write([(1, 2)], None)
    w2.close()


def test_folder_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.write_text("not a folder")
    with pytest.raises(FileSinkError, match=str(target)):
        writer(FileSink(target))


def test_bad_configuration_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="format"):
        FileSink(tmp_path, format="parquet")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="columns"):
        FileSink(tmp_path, columns=["a"])
    with pytest.raises(ConfigError, match="rolling_records"):
        FileSink(tmp_path, rolling_records=0)


def test_part_file_transitions_are_guarded(tmp_path: Path) -> None:
    (tmp_path / "part-0-1.jsonl").write_text("kept\n")
    part = PartFile(str(tmp_path), "part-0-1.jsonl", PartState.COMMITTED)
    with pytest.raises(FileSinkError, match="cannot go from committed to aborted"):
        part.abort()
    assert (tmp_path / "part-0-1.jsonl").read_text() == "kept\n"
    fresh = PartFile(str(tmp_path), ".x", PartState.IN_PROGRESS)
    with pytest.raises(FileSinkError, match="in_progress to committed"):
        fresh.move(PartState.COMMITTED, "y")


def test_failed_write_names_the_file_and_commits_nothing(tmp_path: Path) -> None:
    """Scenario: the file system refuses writes (file size limit, as a full disk would)."""
    script = textwrap.dedent(
        f"""
        import resource, signal
        from weirflow.connectors import FileSink, FileSinkIOError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        w = FileSink({str(tmp_path)!r}).create_writer("job", "out", 0, 1, None)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
        try:
            for _ in range(100):
                w.write(["x" * 1000] * 10, None)
            w.pre_commit(1)
        except FileSinkIOError as e:
            print("ERROR", e)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.startswith("ERROR cannot write part file ")
    assert str(tmp_path / ".part-0-0.jsonl.inprogress") in out.stdout
    assert visible(tmp_path) == []


def test_restore_of_an_older_checkpoint_is_refused_with_the_parts_it_would_repeat(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Scenario: checkpoints 2 and 3 committed parts (3 records), then the job restores
    checkpoint 1: refused, naming both and the count; allowed, a warning says the same."""
    sink = FileSink(tmp_path)
    w = writer(sink)
    w.write(["a"], None)
    state_1 = w.pre_commit(1)
    w.commit(1)
    w.write(["b", "c"], None)
    w.pre_commit(2)
    w.commit(2)
    w.write(["d"], None)
    w.pre_commit(3)
    w.commit(3)
    w.close()
    restored = {0: {0: state_1}}
    with pytest.raises(DuplicateOutputError) as refused:
        refuse_commits_after("job", "out", sink, restored, 1)
    assert (
        f"commits again the 3 records that sink 'out' already committed to folder {tmp_path} "
        "for checkpoints 2..3"
    ) in str(refused.value)
    assert "--allow-duplicates-after-fallback" in str(refused.value)
    refuse_commits_after("job", "out", sink, restored, 3)
    with caplog.at_level("WARNING", logger="weirflow.connectors"):
        refuse_commits_after("job", "out", sink, restored, 1, allow=True)
    assert [r.getMessage() for r in caplog.records if "commits again" in r.getMessage()]
    assert visible(tmp_path) == ["part-0-1.jsonl", "part-0-2.jsonl", "part-0-3.jsonl"]
