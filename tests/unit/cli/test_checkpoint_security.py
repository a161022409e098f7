"""Nothing read from checkpoint storage runs code unless the job's key vouches for it.

Real jobs run under ``weirflow run`` (subprocesses) and write real checkpoints;
the tests then tamper with the files as an attacker who can write the
checkpoint folder but does not hold the key would (recomputing every unkeyed
checksum), and run ``weirflow checkpoints list|inspect`` and restores as real
processes. The attacker's pickle creates a marker file when unpickled; it
must never appear.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pickle
import stat
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

import weirflow
from weirflow.checkpoint.fileformat import HEADER_SIZE, frame

JOB = str(Path(__file__).with_name("security_job.py"))
SRC = str(Path(weirflow.__file__).parents[1])


class _Payload:
    """Unpickling this runs ``open(marker, 'w')``: the attacker's code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def evil_pickle(marker: Path) -> bytes:
    """Tagged like weirflow's pickled values (0x02), so only a decoder's refusal stops it."""
    return b"\x02" + pickle.dumps(_Payload(marker))


def _env(tmp_path: Path, state: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEIRFLOW_CHECKPOINT_KEY")}
    env["PYTHONPATH"] = os.pathsep.join([SRC, env.get("PYTHONPATH", "")])
    env["WF_STATE"] = state
    env["COLUMNS"] = "400"
    env["WF_OUT"] = str(tmp_path / f"out-{state}")
    return env


def weirflow_cli(tmp_path: Path, state: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weirflow.cli", *args],
        env=_env(tmp_path, state),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )


def run_job(tmp_path: Path, state: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return weirflow_cli(
        tmp_path,
        state,
        "run",
        JOB,
        f"--checkpoint-dir={tmp_path / 'chk'}",
        "--checkpoint-interval=20ms",
        "--restart-strategy=none",
        *extra,
    )


def latest_checkpoint(tmp_path: Path) -> Path:
    done = sorted(
        (p.parent for p in (tmp_path / "chk" / "sec").glob("chk-*/_manifest")),
        key=lambda p: int(p.name[4:]),
    )
    assert done, "the job completed no checkpoint"
    return done[-1]


def forge_manifest(path: Path, mutate: Callable[[dict[str, Any]], None]) -> None:
    """Edit the manifest body and recompute its (unkeyed) sha256, as anyone can."""
    doc = json.loads(path.read_text())
    mutate(doc["manifest"])
    canonical = json.dumps(
        doc["manifest"], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    doc["sha256"] = hashlib.sha256(canonical.encode()).hexdigest()
    path.write_text(json.dumps(doc))


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    tmp_path = tmp_path_factory.mktemp("plain")
    result = run_job(tmp_path, "plain")
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp_path, result


@pytest.fixture(scope="module")
def object_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("object")
    result = run_job(tmp_path, "object")
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp_path


def test_the_payload_is_live(tmp_path: Path) -> None:
    """Control: the attacker's pickle does create its marker when unpickled."""
    pickle.loads(evil_pickle(tmp_path / "control")[1:])
    assert (tmp_path / "control").exists()


def test_run_generates_a_private_key_next_to_the_checkpoint_folder(
    plain_run: tuple[Path, subprocess.CompletedProcess],
) -> None:
    tmp_path, result = plain_run
    key_file = tmp_path / "checkpoint-keys" / "sec.key"
    assert f"generated checkpoint key file {key_file} (mode 0600)" in result.stderr
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key_hex = key_file.read_text().strip()
    assert len(key_hex) == 64 and key_hex not in result.stdout + result.stderr


@pytest.mark.parametrize("marker_key", ["$serde", "$msgpack"])
def test_list_and_inspect_never_unpickle_a_tampered_manifest(
    plain_run: tuple[Path, subprocess.CompletedProcess], tmp_path: Path, marker_key: str
) -> None:
    """Scenario: a pickle injected into manifest metadata, sha256 recomputed; listed and
    inspected with the key (found next to the folder) and without it (a copy elsewhere)."""
    source, _ = plain_run
    marker = tmp_path / "pwned"
    with_key = tmp_path / "with-key"
    (with_key / "chk").mkdir(parents=True)
    subprocess.run(["cp", "-a", str(source / "chk" / "sec"), str(with_key / "chk")], check=True)
    subprocess.run(["cp", "-a", str(source / "checkpoint-keys"), str(with_key)], check=True)
    without_key = tmp_path / "no-key"
    (without_key / "chk").mkdir(parents=True)
    subprocess.run(["cp", "-a", str(source / "chk" / "sec"), str(without_key / "chk")], check=True)
    payload = base64.b64encode(evil_pickle(marker)).decode()

    def inject(body: dict[str, Any]) -> None:
        for task in body["tasks"].values():
            task["metadata"]["evil"] = {marker_key: payload}

    for root in (with_key, without_key):
        for manifest in (root / "chk" / "sec").glob("chk-*/_manifest"):
            forge_manifest(manifest, inject)
    for root in (with_key, without_key):
        listed = weirflow_cli(
            root, "plain", "checkpoints", "list", "--checkpoint-dir=chk", "--job=sec"
        )
        inspected = weirflow_cli(root, "plain", "checkpoints", "inspect", "--checkpoint-dir=chk")
        assert not marker.exists(), (listed, inspected)
        assert "Traceback" not in listed.stderr + inspected.stderr
        if root is with_key or marker_key == "$msgpack":
            assert listed.returncode == 1 and "corrupt" in listed.stderr
            assert inspected.returncode == 2
        else:
            # Without the key the forged manifest is accepted as data: the value stays inert.
            assert listed.returncode == 0 and inspected.returncode == 0
    assert (
        "signature does not verify"
        in weirflow_cli(
            with_key, "plain", "checkpoints", "list", "--checkpoint-dir=chk", "--job=sec"
        ).stdout
    )


def _forged_keyed_file(original: bytes, marker: Path) -> bytes:
    """Replace one key group's blob by the attacker's pickle; re-frame with a key of their own."""
    payload = original[HEADER_SIZE:]
    content = msgspec.msgpack.decode(payload[1:])
    kg = next(iter(content["state"]))
    body = evil_pickle(marker)
    content["state"][kg] = struct.pack(">4sHII", b"WFKS", 2, kg, zlib.crc32(body)) + body
    return frame(b"\x01" + msgspec.msgpack.encode(content), os.urandom(32))


def _replace_blob(chk: Path, marker: Path, *, rewrite_manifest: bool) -> Path:
    body = json.loads((chk / "_manifest").read_text())["manifest"]
    (task_id,) = [t for t, task in body["tasks"].items() if "totals" in task["handles"]]
    handle = body["tasks"][task_id]["handles"]["totals"]
    state_file = chk.parent / handle["path"]
    forged = _forged_keyed_file(state_file.read_bytes(), marker)
    state_file.write_bytes(forged)
    if rewrite_manifest:

        def point_at_forgery(b: dict[str, Any]) -> None:
            h = b["tasks"][task_id]["handles"]["totals"]
            h["size"] = len(forged)
            h["checksum"] = "sha256:" + hashlib.sha256(forged[HEADER_SIZE:]).hexdigest()

        forge_manifest(chk / "_manifest", point_at_forgery)
    return state_file


@pytest.mark.parametrize("rewrite_manifest", [False, True])
def test_restore_refuses_a_replaced_pickled_blob_before_decoding_it(
    object_run: Path, tmp_path: Path, rewrite_manifest: bool
) -> None:
    """Scenario: one pickled key-group blob replaced by a malicious pickle (and, in the second
    case, the manifest rewritten to match with a recomputed sha256); the job restores from it."""
    subprocess.run(["cp", "-a", f"{object_run}/.", str(tmp_path)], check=True)
    marker = tmp_path / "pwned"
    chk = latest_checkpoint(tmp_path)
    state_file = _replace_blob(chk, marker, rewrite_manifest=rewrite_manifest)
    result = run_job(tmp_path, "object", f"--restore={chk}")
    assert result.returncode != 0
    assert not marker.exists()
    refused = chk / "_manifest" if rewrite_manifest else state_file
    assert f"checkpoint file {refused.as_uri()} is corrupt: signature does not verify" in (
        result.stderr
    ), result.stderr[-3000:]


def test_plain_state_uses_no_pickle_at_all(
    plain_run: tuple[Path, subprocess.CompletedProcess],
) -> None:
    tmp_path, _ = plain_run
    out = weirflow_cli(tmp_path, "plain", "checkpoints", "inspect", "--checkpoint-dir=chk")
    assert out.returncode == 0, out.stderr
    assert "uses pickle     │ no" in out.stdout
    assert "signatures: verified with the checkpoint key" in out.stdout
    rows = [[c.strip() for c in line.split("│")] for line in out.stdout.splitlines()]
    # "rows" (a map) has no state, so it is not listed.
    assert {r[1]: r[7] for r in rows if len(r) == 8 and r[0] not in ("task", "")} == {
        "numbers": "no",
        "totals": "no",
        "files": "no",
    }
    manifest = json.loads((latest_checkpoint(tmp_path) / "_manifest").read_text())["manifest"]
    assert all(task["pickled_states"] == [] for task in manifest["tasks"].values())


def test_user_class_state_is_reported_as_pickled(object_run: Path) -> None:
    out = weirflow_cli(object_run, "object", "checkpoints", "inspect", "--checkpoint-dir=chk")
    assert out.returncode == 0, out.stderr
    summary = next(line for line in out.stdout.splitlines() if "uses pickle" in line)
    assert "yes: totals (" in summary and "needs the checkpoint key" in summary
    rows = [[c.strip() for c in line.split("│")] for line in out.stdout.splitlines()]
    pickled = {r[1]: r[7] for r in rows if len(r) == 8 and r[0] not in ("task", "")}
    assert pickled["totals"] == "yes"
    assert {v for k, v in pickled.items() if k != "totals"} == {"no"}


def test_restore_of_an_intact_pickled_checkpoint_works(object_run: Path, tmp_path: Path) -> None:
    """Control: with the key, the job's own pickled state restores."""
    subprocess.run(["cp", "-a", f"{object_run}/.", str(tmp_path)], check=True)
    chk = latest_checkpoint(tmp_path)
    result = run_job(tmp_path, "object", f"--restore={chk}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "generated checkpoint key" not in result.stderr


def test_a_given_key_file_signs_and_verifies(tmp_path: Path) -> None:
    """Scenario: --checkpoint-key-file given: nothing generated; only that key verifies."""
    mine = tmp_path / "mine.key"
    mine.write_text(os.urandom(32).hex())
    mine.chmod(0o600)
    other = tmp_path / "other.key"
    other.write_text(os.urandom(32).hex())
    other.chmod(0o600)
    result = run_job(tmp_path, "plain", f"--checkpoint-key-file={mine}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "generated checkpoint key" not in result.stderr
    assert not (tmp_path / "checkpoint-keys").exists()
    args = ("checkpoints", "list", "--checkpoint-dir=chk", "--job=sec")
    ok = weirflow_cli(tmp_path, "plain", *args, f"--checkpoint-key-file={mine}")
    assert ok.returncode == 0 and f"verified with the checkpoint key from {mine}" in ok.stdout
    wrong = weirflow_cli(tmp_path, "plain", *args, f"--checkpoint-key-file={other}")
    assert wrong.returncode == 1 and "signature does not verify" in wrong.stdout
    unchecked = weirflow_cli(tmp_path, "plain", *args)
    assert unchecked.returncode == 0 and "signatures: not checked" in unchecked.stdout
