"""A running job's local control endpoint: savepoints and stops asked from the command line.

The process that runs a job's checkpoints (``weirflow run``'s worker, the
coordinator of ``--workers N``, or a standalone ``weirflow coordinator`` for
each job submitted to it) listens on a loopback port and writes an
*endpoint file* that names the job, the address, a fresh random token, the
process to wait for when the job ends, and the arguments it was launched
with (``weirflow rescale`` relaunches with them). The file is created with
mode 0600 next to the checkpoint folder, as the job's checkpoint key is, so
whoever may read the key may also control the job:

    <checkpoint folder>/../job-endpoints/<job>.json   (a local checkpoint folder)
    ~/.weirflow/job-endpoints/<sha256(storage)[:12]>/<job>.json   (other storage)

A client opens a connection, proves it holds the token with the same mutual
HMAC challenge as the cluster's connections (:mod:`weirflow.runtime.wire`),
sends one :class:`AskSavepoint` and waits for :class:`SavepointWritten` or
:class:`AskFailed`; or sends :class:`AskStatus` and gets the job's
coordinator's :class:`~weirflow.runtime.control.Status` (a job whose
coordinator runs in the endpoint's process: ``--workers N``, ``--ray``).
The answer to a stop comes when the job's run ended (its sinks committed
the savepoint), so a client needs no process to wait for when the job's
runner outlives the job (a standalone coordinator). Messages are msgspec
JSON, never pickles.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from weirflow.checkpoint import default_key_file
from weirflow.errors import CheckpointError, ConfigError, WeirflowError
from weirflow.runtime.savepoint_requests import SavepointRequests
from weirflow.runtime.wire import (
    ConnectionClosedError,
    FramedConnection,
    PeerAuthenticationError,
    authenticate_listener,
    dial,
)

if TYPE_CHECKING:
    # control imports this module (Launch); the answer type is imported where it is decoded
    from weirflow.runtime.control import Status

log = logging.getLogger("weirflow.runtime")

#: Version of the endpoint file's format; a reader refuses any other.
ENDPOINT_FORMAT_VERSION = 1
_FOLDER = "job-endpoints"
#: How long the endpoint waits for a savepoint before answering with a failure (s).
SAVEPOINT_WAIT_S = 600.0
# How long closing waits for a client thread to send its answer (s); a savepoint the ended
# run never answered fails at once (its attempt failed it), so this bounds a send only.
_ANSWER_WAIT_S = 5.0


class Launch(msgspec.Struct, frozen=True):
    """How the running job was started, so that it can be started again.

    Attributes:
        argv: the arguments of ``weirflow run`` (without the command itself),
            empty when unknown (a job started from Python).
        cwd: the working directory they are relative to.
        pid: the process that ends when the job ends (``weirflow run``'s supervisor), or
            ``None`` when none does on this host (a job submitted to a coordinator).
    """

    argv: list[str]
    cwd: str
    pid: int | None


class EndpointInfo(msgspec.Struct, frozen=True):
    """The endpoint file's content.

    Attributes:
        format_version: :data:`ENDPOINT_FORMAT_VERSION`.
        job: the job's name.
        address: ``127.0.0.1:PORT``.
        token: hex of the 32-byte secret a client must prove it holds.
        launch: how the job was started.
    """

    format_version: int
    job: str
    address: str
    token: str
    launch: Launch


class AskSavepoint(msgspec.Struct, tag=True, frozen=True):
    """Take a savepoint into ``target`` (``None``: the default folder); then stop if ``stop``."""

    target: str | None
    stop: bool


class AskStatus(msgspec.Struct, tag=True, frozen=True):
    """Send the job's coordinator's status."""


class SavepointWritten(msgspec.Struct, tag=True, frozen=True):
    """The savepoint is complete at ``url``."""

    url: str


class AskFailed(msgspec.Struct, tag=True, frozen=True):
    """No savepoint was written, because of ``message``."""

    message: str


_Reply = SavepointWritten | AskFailed
_Ask = AskSavepoint | AskStatus


def endpoint_file(storage: str, job: str) -> Path:
    """Return where the endpoint file of ``job`` with checkpoint storage ``storage`` lives.

    Args:
        storage: the checkpoint storage root (``--checkpoint-dir``), folder or URL.
        job: the job's name.
    """
    key_file = default_key_file(storage, job)
    if key_file is not None:
        return key_file.parent.parent / _FOLDER / f"{job}.json"
    digest = hashlib.sha256(storage.encode()).hexdigest()[:12]
    return Path.home() / ".weirflow" / _FOLDER / digest / f"{job}.json"


def read_endpoint(storage: str, job: str) -> EndpointInfo:
    """Read the endpoint file of a running job.

    Raises:
        ConfigError: no endpoint file (the job is not running with this
            checkpoint storage), or one of an unknown format.
    """
    path = endpoint_file(storage, job)
    try:
        info = msgspec.json.decode(path.read_bytes(), type=EndpointInfo)
    except FileNotFoundError:
        raise ConfigError(
            f"no running job {job!r} with checkpoint storage {storage}: {path} does not exist "
            "(check the job name and --checkpoint-dir)"
        ) from None
    except msgspec.DecodeError as e:
        raise ConfigError(f"{path} is not a job endpoint file ({e}); delete it") from e
    if info.format_version != ENDPOINT_FORMAT_VERSION:
        raise ConfigError(
            f"{path} has endpoint format {info.format_version}, this weirflow reads "
            f"{ENDPOINT_FORMAT_VERSION}: use the weirflow version that runs the job"
        )
    return info


class ControlEndpoint:
    """Serves savepoint requests to a running job on a loopback port (see the module docs).

    Args:
        requests: where requests go (the run answers them).
        storage: the checkpoint storage root, to place the endpoint file.
        job: the job's name.
        launch: how the job was started.

    Attributes:
        status: answers :class:`AskStatus` (set once the job's coordinator exists);
            ``None``: the job has no coordinator here, and the answer is :class:`AskFailed`.

    Raises:
        OSError: no port can be bound, or the endpoint file cannot be written.
    """

    def __init__(self, requests: SavepointRequests, storage: str, job: str, launch: Launch) -> None:
        self.requests = requests
        self.path = endpoint_file(storage, job)
        self._secret = secrets.token_bytes(32)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._server.getsockname()[1]}"
        self._closed = threading.Event()
        self._clients: list[threading.Thread] = []
        self.status: Callable[[], Status] | None = None
        self._info = EndpointInfo(
            ENDPOINT_FORMAT_VERSION, job, self.address, self._secret.hex(), launch
        )

    def start(self) -> None:
        """Write the endpoint file (mode 0600) and accept clients on a daemon thread."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(msgspec.json.encode(self._info))
        os.replace(tmp, self.path)
        threading.Thread(target=self._accept, name="weirflow-endpoint", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                sock, _ = self._server.accept()
            except OSError:
                return
            client = threading.Thread(
                target=self._serve, args=(sock,), name="weirflow-endpoint-client", daemon=True
            )
            self._clients.append(client)
            client.start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            authenticate_listener(sock, self._secret)
        except (PeerAuthenticationError, OSError, WeirflowError) as e:
            log.warning("refused a control connection: %s", e)
            sock.close()
            return
        conn = FramedConnection(sock, "control client")
        try:
            ask = msgspec.json.decode(conn.recv(), type=_Ask)
            if isinstance(ask, AskStatus):
                status = self.status
                conn.send(
                    msgspec.json.encode(
                        status() if status is not None else AskFailed("no coordinator here")
                    )
                )
                return
            done = self.requests.submit(ask.target, ask.stop)
            try:
                reply: _Reply = SavepointWritten(done.result(timeout=SAVEPOINT_WAIT_S))
            except TimeoutError:
                reply = AskFailed(f"no savepoint within {SAVEPOINT_WAIT_S:.0f} s")
            except WeirflowError as e:
                reply = AskFailed(str(e))
            if ask.stop and isinstance(reply, SavepointWritten):
                # answer a stop once the run ended: its sinks then committed the savepoint
                self._closed.wait(SAVEPOINT_WAIT_S)
            conn.send(msgspec.json.encode(reply))
        except (ConnectionClosedError, msgspec.DecodeError) as e:
            log.warning("control connection ended: %s", e)
        finally:
            conn.close()

    def close(self) -> None:
        """Stop accepting, send the answers that are ready (the stop savepoint's, before the
        process exits), and remove the endpoint file if it is still this endpoint's."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        self.requests.fail_queued("the job ended")
        for client in self._clients:
            client.join(timeout=_ANSWER_WAIT_S)
        with contextlib.suppress(OSError, msgspec.DecodeError):
            if msgspec.json.decode(self.path.read_bytes(), type=EndpointInfo) == self._info:
                self.path.unlink()


def _dial_job(info: EndpointInfo) -> FramedConnection:
    """An authenticated connection to the job behind ``info``.

    Raises:
        ConfigError: the job does not answer or refuses the token.
    """
    try:
        return dial(info.address, bytes.fromhex(info.token), f"job {info.job}")
    except (OSError, PeerAuthenticationError) as e:
        raise ConfigError(
            f"job {info.job!r} does not answer at {info.address} ({e}): it is not running"
        ) from e


def ask_savepoint(info: EndpointInfo, target: str | None, stop: bool) -> str:
    """Ask the job behind ``info`` for a savepoint and wait for it.

    Args:
        info: the job's endpoint (:func:`read_endpoint`).
        target: the savepoint folder (a path is made absolute here), or ``None``.
        stop: stop the job after the savepoint.

    Returns:
        The savepoint folder's URL.

    Raises:
        ConfigError: the job does not answer (it ended; a stale endpoint file)
            or refuses the token.
        CheckpointError: the job could not write the savepoint.
    """
    if target is not None and "://" not in target:
        target = str(Path(target).absolute())
    conn = _dial_job(info)
    try:
        conn.send(msgspec.json.encode(AskSavepoint(target, stop)))
        reply = msgspec.json.decode(conn.recv(), type=_Reply)
    except ConnectionClosedError as e:
        raise CheckpointError(f"job {info.job!r} ended before answering: {e}") from e
    finally:
        conn.close()
    if isinstance(reply, AskFailed):
        raise CheckpointError(f"job {info.job!r} wrote no savepoint: {reply.message}")
    return reply.url


def ask_status(info: EndpointInfo) -> Status:
    """Ask the job behind ``info`` for its coordinator's status.

    Raises:
        ConfigError: the job does not answer (it ended; a stale endpoint file),
            refuses the token, or has no coordinator in its process (a job of one process).
    """
    from weirflow.runtime.control import Status

    conn = _dial_job(info)
    try:
        conn.send(msgspec.json.encode(AskStatus()))
        reply = msgspec.json.decode(conn.recv(), type=Status | AskFailed)
    except ConnectionClosedError as e:
        raise ConfigError(f"job {info.job!r} ended before answering: {e}") from e
    finally:
        conn.close()
    if isinstance(reply, AskFailed):
        raise ConfigError(
            f"job {info.job!r} runs in one process, without a coordinator to report on: "
            "its dashboard (--ui-port) and /metrics show it"
        )
    return reply
