"""The thaw guard: a separate process that thaws a guest if the process that froze it dies.

:meth:`~qga_libvirt.operations.freeze.FreezeOps.frozen` starts one before it freezes
(a Python process running :func:`main`, in a session of its own, so that neither
Ctrl-C in the terminal nor the death of the freezing process takes it along). The two are
joined by a pipe, the guard's stdin:

- one :data:`RELEASE` byte: the freezing process thawed the guest itself; the guard exits
  without a word to the agent;
- end of file without it: the freezing process died (SIGKILL, a crash) or gave up
  thawing; the guard thaws at once, retrying while the agent restarts;
- the deadline (the frozen window plus :data:`GRACE`) passes first: the freezing process
  is stuck; the guard thaws.

The guard connects to the agent only when it thaws: a chardev socket serves one client
at a time, and while the freezing process lives it holds that one place. It reaches the
agent the way the freezing process did (the same unix socket; the same libvirt URI and
domain UUID), described by :class:`Reach`.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Final

from ..errors import GuestAgentError
from ..transports.base import Transport, features_of

__all__ = ["GRACE", "RELEASE", "Reach", "ThawGuard"]

RELEASE: Final = b"R"
"""The byte that tells the guard the guest was thawed: exit without thawing."""
GRACE: Final = 10.0
"""Seconds past the frozen window before the guard thaws a guest whose freezer is stuck."""
_READY: Final = b"ready\n"
_MAIN: Final = f"import sys; from {__name__} import main; sys.exit(main(sys.argv))"
_START_WAIT: Final = 30.0  # seconds for the guard to start (a loaded machine: imports)
_THAW_FOR: Final = 120.0  # seconds the guard keeps trying: the agent may be restarting


@dataclass(frozen=True)
class Reach:
    """How another process reaches the same agent: a unix socket, or libvirt."""

    target: str
    socket: str | None = None
    uri: str | None = None
    domain_uuid: str | None = None

    @classmethod
    def of(cls, transport: Transport) -> Reach | None:
        """The reach of ``transport``; None for one another process cannot open (a
        connected fd, a fake): see its :class:`~qga_libvirt.transports.base.Identity`."""
        identity = features_of(transport).identity
        if identity is None:
            return None
        return cls(
            transport.target,
            socket=identity.socket,
            uri=identity.uri,
            domain_uuid=identity.domain_uuid,
        )


class ThawGuard:
    """The freezing side of the guard: start it, then release it or abandon it."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process
        self.pid = process.pid

    @classmethod
    def start(cls, reach: Reach, window: float | None) -> ThawGuard:
        """Start a guard for ``reach``; it thaws after ``window`` + :data:`GRACE` seconds
        at the latest (None: only when this process dies or abandons it).

        Raises:
            GuestAgentError: the guard did not start (nothing was frozen yet).
        """
        deadline = None if window is None else window + GRACE
        spec = json.dumps({"reach": asdict(reach), "deadline": deadline})
        env = dict(os.environ)
        # The guard imports this package from where we did, installed or not.
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", _MAIN, spec],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            raise GuestAgentError(
                f"could not start the thaw guard for {reach.target} ({exc}); nothing was frozen",
                target=reach.target,
            ) from exc
        assert process.stdout is not None
        ready = _read_line(process.stdout, _START_WAIT)
        process.stdout.close()
        if ready != _READY:
            process.kill()
            process.wait()
            raise GuestAgentError(
                f"the thaw guard for {reach.target} did not start ({sys.executable} -c "
                f"{_MAIN!r}); nothing was frozen",
                target=reach.target,
            )
        return cls(process)

    def release(self) -> None:
        """The guest is thawed: the guard exits without thawing."""
        stdin = self._process.stdin
        assert stdin is not None
        with contextlib.suppress(OSError):
            stdin.write(RELEASE)
            stdin.flush()
        with contextlib.suppress(OSError):
            stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(5)

    def abandon(self) -> None:
        """We could not thaw: the guard thaws as soon as it can reach the agent."""
        stdin = self._process.stdin
        assert stdin is not None
        with contextlib.suppress(OSError):
            stdin.close()


def _read_line(stream: IO[bytes], timeout: float) -> bytes:
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else b""


# --- the guard process ----------------------------------------------------------------


def _wait_for_word(deadline: float | None) -> bool:
    """True when released; False on end of file (the freezer died) or at the deadline."""
    fd = sys.stdin.fileno()
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return False
        data = os.read(fd, 1)
        if data == RELEASE:
            return True
        if not data:
            return False


def _thaw(reach: Reach) -> str:
    """Thaw, retrying for a while; the outcome in words."""
    from ..client import GuestAgent  # the client imports this module (through frozen())
    from ..models import FsfreezeStatus

    until = time.monotonic() + _THAW_FOR
    last: Exception | None = None
    while time.monotonic() < until:
        try:
            if reach.socket is not None:
                agent = GuestAgent.from_socket(reach.socket, timeout=10, idle_timeout=0)
            else:
                agent = GuestAgent.from_domain(reach.domain_uuid, reach.uri, 10, backend="libvirt")
            with agent:
                agent.fsfreeze_thaw()
                if agent.fsfreeze_status() == FsfreezeStatus.THAWED:
                    return "thawed"
        except GuestAgentError as exc:
            last = exc
        time.sleep(1.0)
    return f"STILL FROZEN after {_THAW_FOR:g} s of trying: {last}"


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    reach = Reach(**spec["reach"])
    window = spec["deadline"]
    deadline = None if window is None else time.monotonic() + float(window)
    sys.stdout.buffer.write(_READY)
    sys.stdout.flush()
    sys.stdout.close()
    if _wait_for_word(deadline):
        return 0
    outcome = _thaw(reach)
    print(
        f"qga thaw guard: the process that froze the filesystems of {reach.target} "
        f"ended or stopped answering without thawing them: {outcome}",
        file=sys.stderr,
    )
    return 0 if outcome == "thawed" else 1
