"""Opening a second handle on a log must not drop the file locks of the first.

SQLite's locks are POSIX advisory locks, which Linux drops for the whole
process as soon as any descriptor of the file is closed. A worker process
opens one log many times (a reader per split, a writer per sink subtask). A
handle that opened and closed the database file itself dropped the shared
lock of every other handle in its process; another process closing its last
handle then believed it was the last user, checkpointed and deleted the
write-ahead log under the first process, and that process's later commits
were lost.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from weirflow.eventlog import EventLog, Record

_APPEND_AND_CLOSE = """
import sys
from weirflow.eventlog import EventLog, Record
log = EventLog(sys.argv[1])
log.append("t", [Record(b"other process")])
log.close()
"""


def test_commits_survive_another_process_closing_the_log(tmp_path: Path) -> None:
    """Scenario: two handles here, another process appends and closes, thrice; nothing is lost."""
    first = EventLog(tmp_path)
    first.create_topic("t", 1)
    first.append("t", [Record(b"before")])
    second = EventLog(tmp_path)
    for k in range(3):
        subprocess.run(
            [sys.executable, "-c", _APPEND_AND_CLOSE, str(tmp_path)], check=True, timeout=60
        )
        first.append("t", [Record(b"first %d" % k)])
        second.append("t", [Record(b"second %d" % k)])
    first.close()
    second.close()
    with EventLog(tmp_path) as again:
        values = sorted(r.value for r in again.read("t", 0, 0))
    expected = [b"before"] + [b"other process"] * 3
    expected += [b"first %d" % k for k in range(3)] + [b"second %d" % k for k in range(3)]
    assert values == sorted(expected)
