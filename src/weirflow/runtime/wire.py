"""Authenticated, length-framed connections between a job's processes.

Every connection of a job — worker to coordinator (control) and worker to
worker (data) — opens with a mutual challenge–response on the job's secret,
before a single frame is decoded:

1. the listening side sends a random 32-byte challenge ``a``;
2. the dialling side answers with its own challenge ``b`` and
   ``HMAC-SHA256(secret, "dial" | a | b)``;
3. the listening side checks that proof (constant-time) and answers with
   ``HMAC-SHA256(secret, "listen" | b | a)``, which the dialler checks.

A peer that fails is disconnected and nothing it sent is decoded, which is
what lets the data plane carry pickled batches: only a process holding the
job's secret can make a worker unpickle anything. The connection is
authenticated, not encrypted; run a cluster on a network you trust.

After the handshake a connection carries frames: a 4-byte big-endian length
and that many bytes. A frame larger than :data:`MAX_FRAME_BYTES` ends the
connection (a bound on what one peer can make another allocate).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import socket
import struct
import threading

from weirflow.errors import WeirflowError

MAX_FRAME_BYTES = 256 * 1024 * 1024
_CHALLENGE_BYTES = 32
_PROOF_BYTES = 32
_HANDSHAKE_TIMEOUT_S = 10.0
_LENGTH = struct.Struct(">I")


class PeerAuthenticationError(WeirflowError):
    """A peer did not prove that it holds the job's secret (wrong ``--token-file``)."""

    retriable = False


class ConnectionClosedError(WeirflowError):
    """The peer closed the connection, or it broke (reset, oversized frame)."""

    retriable = True


def new_secret() -> bytes:
    """Return a fresh random job secret (32 bytes)."""
    return secrets.token_bytes(32)


def _proof(secret: bytes, role: bytes, first: bytes, second: bytes) -> bytes:
    return hmac.new(secret, role + first + second, hashlib.sha256).digest()


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionClosedError("the peer closed the connection")
        data += chunk
    return bytes(data)


def authenticate_dialer(sock: socket.socket, secret: bytes) -> None:
    """Run the dialling side of the handshake on a connected socket.

    Args:
        sock: a connected, blocking socket.
        secret: the job's secret.

    Raises:
        PeerAuthenticationError: the listener's proof does not verify.
        ConnectionClosedError: the listener hung up (it refused our proof).
        OSError: the socket failed or timed out (10 s).
    """
    sock.settimeout(_HANDSHAKE_TIMEOUT_S)
    theirs = _recv_exact(sock, _CHALLENGE_BYTES)
    ours = secrets.token_bytes(_CHALLENGE_BYTES)
    sock.sendall(ours + _proof(secret, b"dial", theirs, ours))
    try:
        answer = _recv_exact(sock, _PROOF_BYTES)
    except ConnectionClosedError:
        raise PeerAuthenticationError(
            "the peer refused this process's secret: give every process of the job the same "
            "--token-file"
        ) from None
    if not hmac.compare_digest(answer, _proof(secret, b"listen", ours, theirs)):
        raise PeerAuthenticationError(
            "the peer does not hold this job's secret: give every process of the job the same "
            "--token-file"
        )
    sock.settimeout(None)


def authenticate_listener(sock: socket.socket, secret: bytes) -> None:
    """Run the listening side of the handshake on an accepted socket.

    Args:
        sock: an accepted, blocking socket.
        secret: the job's secret.

    Raises:
        PeerAuthenticationError: the dialler's proof does not verify (the
            caller closes the socket without reading anything more).
        ConnectionClosedError, OSError: the peer hung up or timed out (10 s).
    """
    sock.settimeout(_HANDSHAKE_TIMEOUT_S)
    ours = secrets.token_bytes(_CHALLENGE_BYTES)
    sock.sendall(ours)
    reply = _recv_exact(sock, _CHALLENGE_BYTES + _PROOF_BYTES)
    theirs, proof = reply[:_CHALLENGE_BYTES], reply[_CHALLENGE_BYTES:]
    if not hmac.compare_digest(proof, _proof(secret, b"dial", ours, theirs)):
        raise PeerAuthenticationError("a peer failed the handshake: it does not hold the secret")
    sock.sendall(_proof(secret, b"listen", theirs, ours))
    sock.settimeout(None)


class FramedConnection:
    """Length-framed messages over an authenticated socket.

    ``send`` may be called from several threads (one lock); ``recv`` from one
    reader thread.

    Args:
        sock: a socket that completed the handshake.
        peer: a name for logs and errors (``"worker 2 at 10.0.0.3:4711"``).
    """

    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock = sock
        self.peer = peer
        self._send_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._closed = False
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # frames are whole batches or control messages: send each at once
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, payload: bytes) -> None:
        """Send one frame.

        Raises:
            ConnectionClosedError: the connection is closed or broke.
        """
        self.send_many([payload])

    def send_many(self, payloads: list[bytes]) -> None:
        """Send several frames with one system call where possible.

        Raises:
            ConnectionClosedError: the connection is closed or broke.
        """
        data = b"".join(_LENGTH.pack(len(p)) + p for p in payloads)
        with self._send_lock:
            if self._closed:
                raise ConnectionClosedError(f"connection to {self.peer} is closed")
            try:
                self.sock.sendall(data)
            except OSError as e:
                raise ConnectionClosedError(f"sending to {self.peer} failed: {e}") from e

    def recv(self) -> bytes:
        """Block until the next frame arrives and return its payload.

        Raises:
            ConnectionClosedError: the peer closed the connection, it broke,
                or it announced a frame over :data:`MAX_FRAME_BYTES`.
        """
        try:
            (length,) = _LENGTH.unpack(_recv_exact(self.sock, _LENGTH.size))
            if length > MAX_FRAME_BYTES:
                raise ConnectionClosedError(
                    f"{self.peer} sent a frame of {length} bytes (limit {MAX_FRAME_BYTES})"
                )
            return _recv_exact(self.sock, length)
        except OSError as e:
            raise ConnectionClosedError(f"receiving from {self.peer} failed: {e}") from e

    def close(self) -> None:
        """Shut the socket down (wakes a blocked reader and sender) and close it; idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        # Shut down before taking the send lock: a send blocked on a peer that stopped
        # reading holds that lock until the shutdown wakes it.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with self._send_lock:
            self.sock.close()


def parse_address(text: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` for IPv6).

    Raises:
        ValueError: no port, or a port outside 0..65535.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def dial(address: str, secret: bytes, peer: str, timeout_s: float = 10.0) -> FramedConnection:
    """Connect to ``HOST:PORT`` and authenticate.

    Args:
        address: ``HOST:PORT``.
        secret: the job's secret.
        peer: a name for logs and errors.
        timeout_s: how long to wait for the TCP connection (s).

    Returns:
        The authenticated :class:`FramedConnection`.

    Raises:
        OSError: the address is unreachable or refuses connections.
        PeerAuthenticationError: the peer or we hold another secret.
    """
    host, port = parse_address(address)
    sock = socket.create_connection((host, port), timeout=timeout_s)
    try:
        authenticate_dialer(sock, secret)
    except BaseException:
        sock.close()
        raise
    return FramedConnection(sock, peer)
