"""Several real processes producing into, and reading from, one log directory at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from weirflow.eventlog import EventLog

pytestmark = pytest.mark.slow

PRODUCERS = 4
PER_PRODUCER = 20_000
BATCH = 500

PRODUCER = """
import sys
from weirflow.eventlog import EventLog, Record
me, n, batch = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
with EventLog(sys.argv[1], "process") as log:
    for start in range(0, n, batch):
        log.append("t", [Record(b"%d-%d" % (me, i), key=b"k%d" % (i % 13))
                         for i in range(start, min(start + batch, n))])
"""

READER = """
import sys
from weirflow.eventlog import EventLog
with EventLog(sys.argv[1], "process") as log:
    for _ in range(25):
        for p in range(4):
            got = log.read("t", p, 0, 100_000, 1 << 30)
            assert [r.offset for r in got] == list(range(len(got))), "gap or duplicate offset"
print("reader ok")
"""


def test_four_producer_processes_give_dense_unique_offsets(tmp_path: Path) -> None:
    """4 processes append 20,000 records each to one topic while a fifth reads."""
    with EventLog(tmp_path, "process") as log:
        log.create_topic("t", 4)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PRODUCER, str(tmp_path), str(me), str(PER_PRODUCER), str(BATCH)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for me in range(PRODUCERS)
    ]
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0 and "reader ok" in out, err
    with EventLog(tmp_path, "process") as log:
        values = []
        for p in range(4):
            got = log.read("t", p, 0, PRODUCERS * PER_PRODUCER, 1 << 30)
            assert [r.offset for r in got] == list(range(log.end_offset("t", p)))
            values.extend(r.value for r in got)
    expected = {b"%d-%d" % (me, i) for me in range(PRODUCERS) for i in range(PER_PRODUCER)}
    assert len(values) == len(expected)
    assert set(values) == expected


OPENER = """
import sys
from weirflow.eventlog import EventLog
with EventLog(sys.argv[1], "process") as log:
    log.create_topic("t", 2, exist_ok=True)
    print(",".join(log.list_topics()))
"""


def test_processes_creating_one_new_log_at_once_agree(tmp_path: Path) -> None:
    """6 processes open the same missing directory and create the same topic at once."""
    for round_no in range(3):
        log_dir = tmp_path / f"log{round_no}"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", OPENER, str(log_dir)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(6)
        ]
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            assert out.strip() == "t"
        with EventLog(log_dir, "process") as log:
            assert log.partition_count("t") == 2
