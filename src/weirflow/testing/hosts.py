"""Test hosts: Linux network namespaces joined by a bridge, for node-failure tests.

Each *host* is a network namespace with one interface, ``eth0``, whose peer
is attached to a bridge inside a namespace of its own, so hosts reach one
another only over links this harness controls. Addresses come from
198.51.100.0/24 (TEST-NET-2, reserved for documentation): they exist only on
these links and nothing outside the namespaces is ever reached.

What a test can do to a host: kill every process in it (a node dies), take
its link down and up again (a partition), SIGSTOP and SIGCONT a process (a
zombie), and add delay and loss with ``tc netem`` (or, on kernels built
without netem, loss with nftables and a slow link with ``tbf``). Each process starts in
its own UTS namespace with the host's name, so it reports a host name of
its own. Creating namespaces needs root (CI runs as root);
:func:`can_create_hosts` says whether this process can.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

_SUBNET = "198.51.100"


def can_create_hosts() -> str | None:
    """Return why test hosts cannot be created here, or ``None`` when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "tc", "unshare", "ss"):
        if shutil.which(tool) is None:
            return f"{tool} (iproute2 / util-linux) is not installed"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@dataclass(frozen=True)
class Host:
    """One test host.

    Attributes:
        name: the host's name (also its UTS host name).
        namespace: its network namespace.
        address: its IPv4 address on the test network.
        bridge_port: the bridge-side end of its link.
    """

    name: str
    namespace: str
    address: str
    bridge_port: str


class TestNetwork:
    """Hosts ``h0 .. h{n-1}`` on one bridge; use as a context manager (it removes all it made).

    Args:
        hosts: number of hosts, 1..200.

    Raises:
        subprocess.CalledProcessError: a namespace or link could not be created.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, hosts: int) -> None:
        tag = uuid.uuid4().hex[:6]
        self.bridge_namespace = f"wfbr-{tag}"
        self.hosts: list[Host] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        _ip("netns", "add", self.bridge_namespace)
        try:
            _ip("-n", self.bridge_namespace, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.bridge_namespace, "link", "set", "br0", "up")
            for k in range(hosts):
                self.hosts.append(self._add_host(tag, k))
        except BaseException:
            self.close()
            raise

    def _add_host(self, tag: str, k: int) -> Host:
        host = Host(f"h{k}", f"wfh{k}-{tag}", f"{_SUBNET}.{k + 1}", f"p{k}")
        _ip("netns", "add", host.namespace)
        _ip("-n", host.namespace, "link", "set", "lo", "up")
        _ip(
            "-n", self.bridge_namespace, "link", "add", host.bridge_port,
            "type", "veth", "peer", "name", "eth0", "netns", host.namespace,
        )  # fmt: skip
        _ip("-n", self.bridge_namespace, "link", "set", host.bridge_port, "master", "br0")
        _ip("-n", self.bridge_namespace, "link", "set", host.bridge_port, "up")
        _ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
        _ip("-n", host.namespace, "link", "set", "eth0", "up")
        return host

    def __enter__(self) -> TestNetwork:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def spawn(
        self,
        host: Host,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log: IO[bytes] | None = None,
        hide: Sequence[Path] = (),
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` on ``host`` (its network and host name); output goes to ``log``.

        Args:
            host: where to run.
            argv: the command.
            env: its environment (default: this process's).
            log: where its stdout and stderr go.
            hide: folders this process sees empty (an empty tmpfs over each, in a
                mount namespace of its own), as on a host that does not share them.
        """
        mounts = "".join(f"mount -t tmpfs tmpfs {shlex.quote(str(d))} && " for d in hide)
        cmd = [
            "ip", "netns", "exec", host.namespace,
            "unshare", "--uts", *(["--mount"] if hide else []),
            "sh", "-c", f'{mounts}hostname {host.name} && exec "$@"', "sh", *argv,
        ]  # fmt: skip
        proc = subprocess.Popen(
            cmd, env=dict(env) if env is not None else None, stdout=log, stderr=log
        )
        self.processes.append(proc)
        return proc

    def pids(self, host: Host) -> list[int]:
        """Process ids of every process in ``host``'s network namespace."""
        done = subprocess.run(
            ["ip", "netns", "pids", host.namespace], capture_output=True, text=True, timeout=30
        )
        return [int(p) for p in done.stdout.split()]

    def kill_host(self, host: Host) -> int:
        """SIGKILL every process of ``host`` at once (the node dies); return how many."""
        pids = self.pids(host)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def cut(self, host: Host) -> None:
        """Take ``host``'s link down: nothing reaches it or leaves it (a partition)."""
        _ip("-n", self.bridge_namespace, "link", "set", host.bridge_port, "down")

    def heal(self, host: Host) -> None:
        """Bring ``host``'s link back up."""
        _ip("-n", self.bridge_namespace, "link", "set", host.bridge_port, "up")

    def impair(self, host: Host, delay_ms: int, loss_percent: float) -> str:
        """Slow ``host``'s link down and drop a share of its packets; return what was applied.

        With ``sch_netem`` in the kernel: every packet ``host`` sends is delayed
        ``delay_ms`` and ``loss_percent`` % are dropped. Kernels built without
        netem get what they support instead: ``loss_percent`` % of packets
        dropped in each direction by nftables, and the link shaped to 2 Mbit/s
        by ``tbf`` (queueing delay under load rather than a fixed delay).

        Raises:
            subprocess.CalledProcessError: neither way is available.
        """

        def run(*cmd: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["ip", "netns", "exec", host.namespace, *cmd],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip

        netem = run(
            "tc", "qdisc", "add", "dev", "eth0", "root", "netem",
            "delay", f"{delay_ms}ms", "loss", f"{loss_percent}%",
        )  # fmt: skip
        if netem.returncode == 0:
            return f"netem: delay {delay_ms} ms, loss {loss_percent} %"
        per_mille = int(loss_percent * 10)
        script = (
            "table inet wfimpair {\n"
            "  chain in { type filter hook input priority 0; "
            f"numgen random mod 1000 < {per_mille} counter drop; }}\n"
            "  chain out { type filter hook output priority 0; "
            f"numgen random mod 1000 < {per_mille} counter drop; }}\n"
            "}\n"
        )
        subprocess.run(
            ["ip", "netns", "exec", host.namespace, "nft", "-f", "-"],
            input=script, check=True, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        shaped = run(
            "tc", "qdisc", "add", "dev", "eth0", "root", "tbf",
            "rate", "2mbit", "burst", "16kbit", "latency", f"{max(delay_ms, 50)}ms",
        )  # fmt: skip
        shaped.check_returncode()
        return (
            f"no netem in this kernel ({netem.stderr.strip()}): nftables loss {loss_percent} % "
            "each way, tbf 2 Mbit/s"
        )

    def dropped_packets(self, host: Host) -> int:
        """Packets dropped so far by :meth:`impair`'s nftables rules on ``host`` (0 with netem)."""
        done = subprocess.run(
            ["ip", "netns", "exec", host.namespace, "nft", "list", "table", "inet", "wfimpair"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        return sum(int(n) for n in re.findall(r"packets (\d+)", done.stdout))

    def close(self) -> None:
        """Kill every process started here and in the hosts, and delete the namespaces."""
        for host in self.hosts:
            for pid in self.pids(host):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
                    os.kill(pid, signal.SIGKILL)
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        for ns in [h.namespace for h in self.hosts] + [self.bridge_namespace]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def write_token(path: Path) -> Path:
    """Write a fresh job secret to ``path`` (mode 0600) and return the path."""
    path.write_text(os.urandom(32).hex())
    path.chmod(0o600)
    return path
