"""``weirflow log ...`` end to end through the typer app, on real log directories."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from weirflow.cli import app
from weirflow.eventlog import EventLog, NotAnEventLogError, Record

runner = CliRunner()


def run(log_dir: Path, *args: str, stdin: str | None = None, code: int = 0) -> str:
    result = runner.invoke(app, ["log", "--log-dir", str(log_dir), *args], input=stdin)
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    return result.stdout


def test_create_produce_consume_jsonl(tmp_path: Path) -> None:
    lines = [json.dumps({"user": f"u{i % 3}", "ts": 1_000 + i, "n": i}) for i in range(10)]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    run(tmp_path / "log", "create", "events", "--partitions", "3")
    run(
        tmp_path / "log",
        "produce",
        "events",
        "--file",
        str(src),
        "--key-field",
        "user",
        "--timestamp-field",
        "ts",
    )
    out = run(tmp_path / "log", "consume", "events", "--format", "jsonl")
    records = [json.loads(line) for line in out.splitlines()]
    assert sorted(r["value"] for r in records) == sorted(lines)
    for r in records:
        body = json.loads(r["value"])
        assert r["key"] == body["user"] and r["timestamp_ms"] == body["ts"]
        assert r["topic"] == "events" and r["headers"] == []
    by_key = {}
    for r in records:
        by_key.setdefault(r["key"], set()).add(r["partition"])
    assert all(len(parts) == 1 for parts in by_key.values())


def test_stdin_values_partition_offset_and_max(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    run(log_dir, "create", "t", "--partitions", "2")
    run(log_dir, "produce", "t", "--partition", "1", stdin="a\nb\nc\nd\n")
    assert run(log_dir, "consume", "t", "--partition", "0") == ""
    assert run(log_dir, "consume", "t", "--partition", "1").splitlines() == ["a", "b", "c", "d"]
    assert run(log_dir, "consume", "t", "--partition", "1", "--offset", "2") == "c\nd\n"
    assert run(log_dir, "consume", "t", "--max", "3").splitlines() == ["a", "b", "c"]


def test_group_positions_and_lag(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    run(log_dir, "create", "t")
    run(log_dir, "produce", "t", stdin="1\n2\n3\n4\n5\n")
    assert run(log_dir, "consume", "t", "--group", "g", "--max", "2") == "1\n2\n"
    assert "3" in run(log_dir, "lag", "--group", "g").split("│")[-2]
    assert run(log_dir, "consume", "t", "--group", "g") == "3\n4\n5\n"
    assert run(log_dir, "consume", "t", "--group", "g") == ""
    assert run(log_dir, "consume", "t", "--group", "g", "--from-beginning", "--max", "1") == "1\n"


def test_isolation_and_binary_values(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    with EventLog(log_dir, "process") as log:
        log.create_topic("t", 1)
        log.append("t", [Record(b"\xff\x00")])
        producer = log.transactional_producer("x")
        producer.begin()
        producer.append("t", [Record(b"staged")])
    committed = run(log_dir, "consume", "t", "--format", "jsonl").splitlines()
    assert [json.loads(x)["value"] for x in committed] == [{"base64": "/wA="}]
    dirty = run(log_dir, "consume", "t", "--isolation", "read_uncommitted", "--format", "jsonl")
    assert [json.loads(x)["value"] for x in dirty.splitlines()][1] == "staged"


def test_describe_shows_every_topic(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    run(log_dir, "create", "alpha", "--partitions", "2", "--retention-ms", "5000")
    run(log_dir, "create", "beta")
    run(log_dir, "produce", "beta", stdin="xyz\n")
    out = run(log_dir, "describe")
    assert "alpha (retention_ms=5000)" in out and "beta" in out
    assert out.count("│") > 10


def test_log_dir_from_the_environment(tmp_path: Path) -> None:
    result = runner.invoke(app, ["log", "create", "t"], env={"WEIRFLOW_LOG_DIR": str(tmp_path)})
    assert result.exit_code == 0, result.stderr
    with EventLog(tmp_path, "process") as log:
        assert log.list_topics() == ["t"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["consume", "nope"], "unknown topic 'nope'"),
        (["consume", "t", "--partition", "4"], "partition 4 out of range"),
        (["consume", "t", "--offset", "9"], "offset 9 out of range"),
        (["create", "t"], "already exists"),
        (["produce", "t", "--key-field", "k"], "line 1: not JSON"),
        (["lag", "--group", "none"], "no committed positions"),
        (["consume", "t", "--format", "xml"], "--format"),
    ],
)
def test_errors_print_one_line_without_traceback(
    tmp_path: Path, args: list[str], message: str
) -> None:
    run(tmp_path, "create", "t")
    result = runner.invoke(app, ["log", "--log-dir", str(tmp_path), *args], input="plain\n")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_not_a_log_names_the_path_and_debug_shows_the_exception(tmp_path: Path) -> None:
    bogus = tmp_path / "file.txt"
    bogus.write_text("x")
    result = runner.invoke(app, ["log", "--log-dir", str(bogus), "describe"])
    assert result.exit_code == 1 and str(bogus) in result.stderr
    result = runner.invoke(app, ["log", "--debug", "--log-dir", str(bogus), "describe"])
    assert isinstance(result.exception, NotAnEventLogError)


def test_quickstart_runs_twice_on_the_same_directory(tmp_path: Path) -> None:
    first = runner.invoke(app, ["log", "quickstart", "--log-dir", str(tmp_path)])
    assert first.exit_code == 0, (first.stdout, first.stderr)
    second = runner.invoke(app, ["log", "quickstart", "--log-dir", str(tmp_path)])
    assert second.exit_code == 0, (second.stdout, second.stderr)
    assert "aborted: end offset still 0" in first.stdout
    assert "aborted: end offset still 3" in second.stdout
    with EventLog(tmp_path, "process") as log:
        assert sum(p.record_count for p in log.describe("quickstart.clicks").partitions) == 600
        assert log.end_offset("quickstart.payments", 0) == 6
        assert log.lag("quickstart.readers")


def test_follow_prints_records_appended_later(tmp_path: Path) -> None:
    with EventLog(tmp_path, "process") as log:
        log.create_topic("t", 1)
        log.append("t", [Record(b"early")])
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from weirflow.cli import main; main()",
                "log",
                "--log-dir",
                str(tmp_path),
                "consume",
                "t",
                "--follow",
                "--poll-ms",
                "20",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "early\n"
            log.append("t", [Record(b"late")])
            assert proc.stdout.readline() == "late\n"
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.mark.parametrize(
    "args", [["describe"], ["consume", "t"], ["lag", "--group", "g"], ["produce", "t"]]
)
def test_commands_that_need_a_log_refuse_a_path_without_one(
    tmp_path: Path, args: list[str]
) -> None:
    """Scenario: a mistyped --log-dir: exit 1, one line, and nothing is created there."""
    missing = tmp_path / "mistyped" / "log"
    result = runner.invoke(app, ["log", "--log-dir", str(missing), *args], input="v\n")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "no event log here" in result.stderr
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "mistyped").exists()


def test_non_utf8_input_is_a_clear_error_and_raw_stores_it(tmp_path: Path) -> None:
    src = tmp_path / "in.bin"
    src.write_bytes(b"ok\n\xff\xfe\n")
    run(tmp_path, "create", "t")
    result = runner.invoke(app, ["log", "--log-dir", str(tmp_path), "produce", "t", "-f", str(src)])
    assert result.exit_code == 1
    assert "line 2: not UTF-8 text" in result.stderr and "--value-format raw" in result.stderr
    assert result.stderr.count("\n") == 1
    run(tmp_path, "produce", "t", "-f", str(src), "--value-format", "raw")
    with EventLog(tmp_path, "process") as log:
        assert [r.value for r in log.read("t", 0, 0)] == [b"ok", b"\xff\xfe"]


@pytest.mark.parametrize("fmt", ["base64", "hex"])
def test_binary_values_round_trip_encoded(tmp_path: Path, fmt: str) -> None:
    """Scenario: values with newlines, NUL and invalid UTF-8 go in and come out encoded."""
    values = [b"\x00\n\xff", b"", b"plain", bytes(range(256))]
    encode = (lambda v: base64.b64encode(v).decode()) if fmt == "base64" else bytes.hex
    lines = "".join(f"{encode(v)}\n" for v in values)
    run(tmp_path, "create", "t")
    run(tmp_path, "produce", "t", "--value-format", fmt, stdin=lines)
    with EventLog(tmp_path, "process") as log:
        assert [r.value for r in log.read("t", 0, 0)] == values
    assert run(tmp_path, "consume", "t", "--value-format", fmt) == lines


def test_bad_encoded_line_is_named(tmp_path: Path) -> None:
    run(tmp_path, "create", "t")
    result = runner.invoke(
        app,
        ["log", "--log-dir", str(tmp_path), "produce", "t", "--value-format", "hex"],
        input="00ff\nzz\n",
    )
    assert result.exit_code == 1 and "line 2: not hex" in result.stderr


def test_consume_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """Scenario: `weirflow log consume t | head -1` on more records than a pipe buffer holds."""
    with EventLog(tmp_path, "process") as log:
        log.create_topic("t", 1)
        log.append("t", [Record(b"%d" % i * 20) for i in range(50_000)])
    out = subprocess.run(
        f"{sys.executable} -m weirflow.cli log --log-dir {tmp_path} consume t | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.stdout == "0" * 20 + "\n"
    assert out.stderr == "", out.stderr
