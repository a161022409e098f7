"""The handshake that guards every connection of a job, and framing."""

from __future__ import annotations

import pickle
import socket
import struct
import threading
from pathlib import Path

import pytest

from weirflow.runtime.wire import (
    MAX_FRAME_BYTES,
    ConnectionClosedError,
    FramedConnection,
    PeerAuthenticationError,
    authenticate_dialer,
    authenticate_listener,
    new_secret,
)


def _pair(dialer_secret: bytes, listener_secret: bytes) -> tuple[object, object]:
    """Run both sides of the handshake over a real socket pair; return each side's outcome."""
    a, b = socket.socketpair()
    out: dict[str, object] = {}

    def listen() -> None:
        try:
            authenticate_listener(b, listener_secret)
            out["listener"] = FramedConnection(b, "dialer")
        except Exception as e:
            out["listener"] = e
            b.close()

    t = threading.Thread(target=listen)
    t.start()
    try:
        authenticate_dialer(a, dialer_secret)
        out["dialer"] = FramedConnection(a, "listener")
    except Exception as e:
        out["dialer"] = e
        a.close()
    t.join(5)
    return out["dialer"], out["listener"]


def test_same_secret_connects_and_frames_travel_in_order() -> None:
    secret = new_secret()
    dialer, listener = _pair(secret, secret)
    assert isinstance(dialer, FramedConnection) and isinstance(listener, FramedConnection)
    dialer.send_many([b"one", b"", b"three" * 1000])
    assert [listener.recv() for _ in range(3)] == [b"one", b"", b"three" * 1000]
    listener.send(b"back")
    assert dialer.recv() == b"back"
    dialer.close()
    with pytest.raises(ConnectionClosedError):
        listener.recv()


def test_wrong_secret_is_refused_on_both_sides() -> None:
    dialer, listener = _pair(b"the job's secret", b"another secret")
    assert isinstance(listener, PeerAuthenticationError)
    assert isinstance(dialer, PeerAuthenticationError)
    assert "--token-file" in str(dialer)


def test_a_peer_without_the_secret_cannot_make_the_listener_unpickle(tmp_path: Path) -> None:
    """Scenario: a stranger connects and sends a pickle that would run code; nothing runs."""
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Evil(str(marker)))
    a, b = socket.socketpair()
    result: list[object] = []

    def listen() -> None:
        try:
            authenticate_listener(b, b"secret")
            result.append(pickle.loads(FramedConnection(b, "x").recv()))
        except Exception as e:
            result.append(e)

    t = threading.Thread(target=listen)
    t.start()
    a.recv(32)
    a.sendall(b"\0" * 64 + struct.pack(">I", len(payload)) + payload)
    t.join(5)
    a.close()
    assert isinstance(result[0], PeerAuthenticationError)
    assert not marker.exists()


class _Evil:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (Path(self.path), "ran"))  # type: ignore[return-value]


def test_oversized_frame_ends_the_connection() -> None:
    secret = new_secret()
    dialer, listener = _pair(secret, secret)
    assert isinstance(dialer, FramedConnection) and isinstance(listener, FramedConnection)
    dialer.sock.sendall(struct.pack(">I", MAX_FRAME_BYTES + 1))
    with pytest.raises(ConnectionClosedError, match="limit"):
        listener.recv()


def test_close_wakes_a_send_blocked_on_a_peer_that_stopped_reading() -> None:
    """Scenario: a worker's scheduler is stuck sending to a paused peer (its socket buffers
    are full) when the coordinator cancels the attempt; closing the connection from the
    control thread must end the send at once instead of waiting for the send's lock."""
    secret = new_secret()
    dialer, listener = _pair(secret, secret)
    assert isinstance(dialer, FramedConnection) and isinstance(listener, FramedConnection)
    sending_failed = threading.Event()

    def flood() -> None:
        try:
            while True:
                dialer.send(b"x" * 1_000_000)
        except ConnectionClosedError:
            sending_failed.set()

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    # The listener reads nothing: the sender fills the buffers and stays in sendall,
    # holding the send lock.
    while dialer._send_lock.acquire(timeout=0.5):
        dialer._send_lock.release()
    closer = threading.Thread(target=dialer.close, daemon=True)
    closer.start()
    closer.join(10)
    assert not closer.is_alive(), "close() waited for the blocked send's lock"
    sender.join(10)
    assert sending_failed.is_set()
    listener.close()
