"""Run the host's own qemu-ga as a real agent on a unix socket: for tests, benchmarks, demos.

The host agent answers every QGA command for real, so the commands that would change
the machine it runs on are blocked (:data:`BLOCKED`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["BLOCKED", "HostAgent"]

BLOCKED = (
    "guest-shutdown",
    "guest-suspend-disk",
    "guest-suspend-ram",
    "guest-suspend-hybrid",
    "guest-fsfreeze-freeze",
    "guest-fsfreeze-freeze-list",
    "guest-fsfreeze-thaw",
    "guest-fstrim",
    "guest-set-time",
    "guest-set-user-password",
    "guest-set-vcpus",
    "guest-set-memory-blocks",
)
"""Commands that would change the host if its own qemu-ga ran them."""


class HostAgent:
    """A qemu-ga process in ``unix-listen`` mode, in a directory of its own.

    Use as a context manager; :attr:`socket` is the path to connect to. :meth:`restart`
    stops and starts it on the same path (an agent restart, as a guest reboot would do).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        blocked: tuple[str, ...] = BLOCKED,
        binary: str | None = None,
    ) -> None:
        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix="qga-agent-")
        self.directory = Path(directory or self._tmp.name)  # type: ignore[union-attr]
        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket = self.directory / "qga.sock"
        self.blocked = blocked
        self.binary = binary or shutil.which("qemu-ga") or "/usr/sbin/qemu-ga"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start qemu-ga and wait until its socket accepts connections.

        Raises:
            RuntimeError: qemu-ga is missing or did not start (its stderr is quoted).
        """
        if not os.path.exists(self.binary):
            raise RuntimeError(f"{self.binary} not found: apt-get install qemu-guest-agent")
        self.socket.unlink(missing_ok=True)
        command = [self.binary, "-m", "unix-listen", "-p", str(self.socket)]
        command += ["-t", str(self.directory), "-f", str(self.directory / "qga.pid")]
        if self.blocked:
            command += ["-b", ",".join(self.blocked)]
        log = open(self.directory / "qga.log", "wb")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while not _listening(self.socket):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"qemu-ga did not start: {self.log()}")
            time.sleep(0.005)

    def log(self) -> str:
        path = self.directory / "qga.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


def _listening(path: Path) -> bool:
    """Whether a unix socket at ``path`` accepts connections: it exists between bind()
    and listen() too, and a connect in that window is refused. /proc/net/unix marks a
    listening socket with the __SO_ACCEPTCON flag (0x10000), without connecting to it."""
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return path.exists()
    target = str(path)
    for line in lines:
        fields = line.split()
        if len(fields) >= 8 and fields[7] == target and int(fields[3], 16) & 0x10000:
            return True
    return False
