"""The running job's control endpoint: authentication, answers, discovery errors."""

from __future__ import annotations

import threading
from pathlib import Path

import msgspec
import pytest
from typer.testing import CliRunner

from weirflow.cli import app
from weirflow.errors import CheckpointError, ConfigError
from weirflow.runtime.endpoint import (
    ControlEndpoint,
    EndpointInfo,
    Launch,
    ask_savepoint,
    endpoint_file,
    read_endpoint,
)
from weirflow.runtime.savepoint_requests import SavepointRequests


def _answer(
    requests: SavepointRequests,
    result: str | Exception,
    stop: threading.Event,
    endpoint: ControlEndpoint | None = None,
) -> None:
    """Stand in for the job's round hook: answer each request as it comes, and end the run
    (close ``endpoint``) after a stop."""
    while not stop.wait(0.01):
        for request in requests.take():
            if isinstance(result, Exception):
                request.done.set_exception(result)
            else:
                request.done.set_result(f"{result}:{request.target}:{request.stop}")
            if request.stop and endpoint is not None:
                endpoint.close()


@pytest.fixture
def running(tmp_path: Path):  # type: ignore[no-untyped-def]
    requests = SavepointRequests()
    endpoint = ControlEndpoint(requests, str(tmp_path / "chk"), "shop", Launch([], "/", 1))
    endpoint.start()
    yield requests, endpoint, tmp_path / "chk"
    endpoint.close()


def test_the_endpoint_file_is_private_and_names_the_job(running) -> None:  # type: ignore[no-untyped-def]
    _, endpoint, chk = running
    path = endpoint_file(str(chk), "shop")
    assert path == chk.parent / "job-endpoints" / "shop.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_endpoint(str(chk), "shop").address == endpoint.address


def test_a_stop_savepoint_is_answered_when_the_run_ended(running) -> None:  # type: ignore[no-untyped-def]
    requests, endpoint, chk = running
    stop = threading.Event()
    threading.Thread(target=_answer, args=(requests, "url", stop, endpoint), daemon=True).start()
    try:
        url = ask_savepoint(read_endpoint(str(chk), "shop"), "sp", stop=True)
    finally:
        stop.set()
    assert url == f"url:{Path('sp').absolute()}:True"


def test_a_failed_savepoint_is_reported(running) -> None:  # type: ignore[no-untyped-def]
    requests, _, chk = running
    stop = threading.Event()
    failure = CheckpointError("checkpoint 4 failed")
    threading.Thread(target=_answer, args=(requests, failure, stop), daemon=True).start()
    try:
        with pytest.raises(CheckpointError, match="checkpoint 4 failed"):
            ask_savepoint(read_endpoint(str(chk), "shop"), None, stop=False)
    finally:
        stop.set()


def test_a_client_without_the_token_is_refused(running) -> None:  # type: ignore[no-untyped-def]
    requests, _, chk = running
    forged = msgspec.structs.replace(read_endpoint(str(chk), "shop"), token="00" * 32)
    with pytest.raises(ConfigError, match="does not answer"):
        ask_savepoint(forged, None, stop=True)
    assert requests.take() == [], "an unauthenticated client queued a request"


def test_close_removes_the_file_and_fails_waiting_requests(tmp_path: Path) -> None:
    requests = SavepointRequests()
    endpoint = ControlEndpoint(requests, str(tmp_path / "chk"), "shop", Launch([], "/", 1))
    endpoint.start()
    done = requests.submit(None, stop=True)
    endpoint.close()
    assert not endpoint_file(str(tmp_path / "chk"), "shop").exists()
    with pytest.raises(CheckpointError, match="the job ended"):
        done.result(timeout=1)


@pytest.mark.parametrize(
    "command", [["savepoint"], ["stop", "--savepoint"], ["rescale", "--parallelism=2"]]
)
def test_no_running_job_is_a_one_line_error(tmp_path: Path, command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "shop", f"--checkpoint-dir={tmp_path / 'chk'}"])
    assert result.exit_code == 2, result.output
    assert "no running job 'shop'" in result.output and "Traceback" not in result.output


def test_a_stale_endpoint_file_is_a_clear_error(tmp_path: Path) -> None:
    path = endpoint_file(str(tmp_path / "chk"), "shop")
    path.parent.mkdir(parents=True)
    stale = EndpointInfo(1, "shop", "127.0.0.1:1", "00" * 32, Launch([], "/", 1))
    path.write_bytes(msgspec.json.encode(stale))
    result = CliRunner().invoke(app, ["savepoint", "shop", f"--checkpoint-dir={tmp_path / 'chk'}"])
    assert result.exit_code == 2, result.output
    assert "is not running" in result.output
