"""A Ray test cluster inside a network namespace of its own, for tests and benchmarks.

Ray binds the machine's real network interfaces even when told to use
loopback, so a test runs Ray only inside a network namespace it creates,
with nothing but loopback: nothing Ray sends leaves it. :class:`RayInNamespace`
creates the namespace, starts :mod:`weirflow.testing.ray_harness` in it (Ray's
own multi-node harness: a head and two worker nodes, each a raylet of its
own), runs commands there, removes nodes on request, and at the end kills
everything in the namespace and deletes it. Needs root (see
:func:`weirflow.testing.hosts.can_create_hosts`); does not import ``ray``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

# Ray's node health checks, fast enough that a removed node is declared dead within ~3 s
# (the default takes ~15 s); a Ray deployment tunes the same settings. A removed node
# refuses each check at once; a live raylet on a loaded machine may stall for a second or
# more, and 3 checks of 500 ms once declared one dead (its raylet then exits).
HEALTH_CHECKS = json.dumps(
    {"health_check_period_ms": 500, "health_check_failure_threshold": 5,
     "health_check_timeout_ms": 1000}
)  # fmt: skip


def parent_pid(pid: int) -> int:
    """The parent process id of ``pid`` (0: it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


class RayInNamespace:
    """A network namespace with only loopback, a Ray test cluster in it, and what runs there.

    Use as a context manager, or call :meth:`close`: it ends the cluster,
    SIGKILLs every process left in the namespace and deletes it.

    Args:
        env: the environment of the cluster's processes and of :meth:`prefix`
            commands the caller starts (default: this process's).

    Raises:
        subprocess.CalledProcessError: the namespace could not be created.
        RuntimeError: the Ray cluster did not start.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.name = f"wfray-{uuid.uuid4().hex[:6]}"
        self.env = dict(os.environ if env is None else env)
        subprocess.run(["ip", "netns", "add", self.name], check=True, timeout=30)
        self.harness: subprocess.Popen[str] | None = None
        try:
            subprocess.run(
                ["ip", "-n", self.name, "link", "set", "lo", "up"], check=True, timeout=30
            )
            self.harness = subprocess.Popen(
                [*self.prefix(), sys.executable, "-m", "weirflow.testing.ray_harness"],
                env={**self.env, "WF_RAY_SYSTEM_CONFIG": HEALTH_CHECKS},
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            self.address = self._reply()["address"]
        except BaseException:
            self.close()
            raise

    def prefix(self) -> list[str]:
        """The command prefix that runs a program inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def _reply(self) -> dict[str, Any]:
        assert self.harness is not None and self.harness.stdout is not None
        line = self.harness.stdout.readline()
        if not line:
            raise RuntimeError("the Ray test cluster ended (its output is above)")
        return json.loads(line)

    def _ask(self, command: str) -> dict[str, Any]:
        if self.harness is None or self.harness.stdin is None:
            raise RuntimeError("the Ray test cluster is closed")
        self.harness.stdin.write(f"{command}\n")
        self.harness.stdin.flush()
        return self._reply()

    def replace_node_of(self, pid: int) -> str | None:
        """Remove the Ray node that runs process ``pid`` and add a fresh one; the removed
        node's Ray id (hex), ``None``: no node runs ``pid``."""
        return self._ask(f"replace-node {pid}")["removed"]

    def alive_nodes(self) -> set[str]:
        """The Ray ids (hex) of the nodes Ray reports alive (``ray.nodes()`` in the namespace)."""
        return set(self._ask("nodes")["nodes"])

    def get_json(self, url: str) -> Any:
        """GET ``url`` from inside the namespace and decode its JSON body.

        Raises:
            subprocess.CalledProcessError: the request failed (nothing listens, an HTTP error).
        """
        code = (
            "import sys, urllib.request\n"
            "sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1], timeout=10).read())"
        )
        out = subprocess.run(
            [*self.prefix(), sys.executable, "-c", code, url],
            capture_output=True, check=True, timeout=60, env=self.env,
        ).stdout  # fmt: skip
        return json.loads(out)

    def receive_posts(self, into: Path) -> tuple[subprocess.Popen[bytes], str]:
        """Serve HTTP inside the namespace, appending the body of every POST to ``into``
        (one line each, newlines inside a body turned into spaces): a webhook for a job
        that runs there, as an alert receiver reachable only through the namespace's
        loopback.

        Returns:
            the server's process (ended by :meth:`close` at the latest) and its URL.

        Raises:
            RuntimeError: the server did not start.
        """
        code = (
            "import sys, http.server\n"
            "class Posts(http.server.BaseHTTPRequestHandler):\n"
            "    def do_POST(self):\n"
            "        body = self.rfile.read(int(self.headers['Content-Length']))\n"
            "        with open(sys.argv[1], 'ab') as f:\n"
            "            f.write(body.replace(b'\\n', b' ') + b'\\n')\n"
            "        self.send_response(204)\n"
            "        self.end_headers()\n"
            "    def log_message(self, *args):\n"
            "        pass\n"
            "server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Posts)\n"
            "print(server.server_address[1], flush=True)\n"
            "server.serve_forever()\n"
        )
        proc = subprocess.Popen(
            [*self.prefix(), sys.executable, "-c", code, str(into)],
            env=self.env, stdout=subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()
        if not port:
            proc.kill()
            raise RuntimeError("the webhook receiver did not start")
        return proc, f"http://127.0.0.1:{int(port)}/alerts"

    def silence(self, pids: list[int]) -> list[int]:
        """Drop every packet to or from the TCP ports the processes ``pids`` hold now, as a
        machine that crashed sends nothing more, not even the close of its connections
        (the harness's nodes share one kernel, which closes a dead process's connections).
        Undone by :meth:`unsilence`.

        Returns:
            the ports silenced (empty: ``pids`` hold no TCP socket; nothing changes).

        Raises:
            subprocess.CalledProcessError: ``nft`` failed.
        """
        out = subprocess.run(
            [*self.prefix(), "ss", "-Htanp"], capture_output=True, text=True, timeout=30,
            check=True,
        ).stdout  # fmt: skip
        ports = sorted(
            {
                int(line.split()[3].rpartition(":")[2])
                for line in out.splitlines()
                if any(f"pid={pid}," in line for pid in pids)
            }
        )
        if ports:
            listed = ", ".join(map(str, ports))
            script = (
                "table inet wfsilence {\n"
                "  chain out { type filter hook output priority 0; "
                f"tcp sport {{ {listed} }} drop; tcp dport {{ {listed} }} drop; }}\n"
                "}\n"
            )
            subprocess.run(
                [*self.prefix(), "nft", "-f", "-"],
                input=script, check=True, capture_output=True, text=True, timeout=30,
            )  # fmt: skip
        return ports

    def unsilence(self) -> None:
        """Let every port silenced by :meth:`silence` speak again (none: nothing changes)."""
        subprocess.run(
            [*self.prefix(), "nft", "delete", "table", "inet", "wfsilence"],
            capture_output=True, timeout=30,
        )  # fmt: skip

    def pids(self) -> list[int]:
        """Process ids of every process in the namespace."""
        out = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True, timeout=30
        ).stdout
        return [int(pid) for pid in out.split()]

    def worker_actor_pids(self) -> list[int]:
        """Process ids of the weirflow worker actors in the namespace."""
        return self.actor_pids("WorkerActor")

    def worker_actors_beside(self, pid: int) -> list[int]:
        """Process ids of the worker actors on the node of worker actor ``pid`` (with it):
        those its raylet started."""
        raylet = parent_pid(pid)
        return [p for p in self.worker_actor_pids() if parent_pid(p) == raylet]

    def actor_pids(self, actor_class: str) -> list[int]:
        """Process ids of the Ray actors of class ``actor_class`` in the namespace."""
        pids = []
        for pid in self.pids():
            with contextlib.suppress(OSError):
                if f"ray::{actor_class}".encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    pids.append(pid)
        return pids

    def close(self) -> None:
        """End the harness, SIGKILL every process left in the namespace, delete it."""
        if self.harness is not None and self.harness.poll() is None:
            with contextlib.suppress(OSError):
                if self.harness.stdin is not None:
                    self.harness.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.harness.wait(timeout=30)
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.harness is not None and self.harness.poll() is None:
            self.harness.kill()
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)

    def __enter__(self) -> RayInNamespace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
