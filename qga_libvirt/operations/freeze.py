"""Freeze the guest's filesystems for a snapshot, and always thaw them.

``with agent.frozen() as count:`` freezes, yields how many filesystems are frozen, and
thaws on the way out, whatever happened inside. What can go wrong is handled loudly:

- The thaw is retried a few times with a short backoff; if it still fails,
  :class:`~qga_libvirt.errors.ThawError` says the guest is STILL FROZEN and how to thaw
  it by hand. A guest is never left frozen silently.
- ``timeout`` caps the frozen window: a watchdog thread thaws when the body runs longer
  (a frozen guest blocks every writer), and leaving the block then raises
  :class:`~qga_libvirt.errors.FreezeTimeoutError` (or, if the body raised, notes it on
  the body's exception), since what the body did after the thaw is not consistent.
- A freeze request whose reply is lost (timeout, connection lost, Ctrl-C while it was on
  its way) may have frozen the guest anyway: it is thawed before the error goes on. A
  freeze the agent refuses is not thawed: when the refusal is GuestFrozenError, someone
  else's freeze is on. Every exception, KeyboardInterrupt included, thaws and is
  re-raised; a thaw that fails for any reason is ThawError, never silence.
- The freezing process may die (SIGKILL, a crash) or hang: a thaw guard process
  (:mod:`~qga_libvirt.operations.thawguard`), started before the freeze and detached
  from us, thaws when we die without releasing it, or ``timeout`` +
  :data:`~qga_libvirt.operations.thawguard.GRACE` seconds after the freeze. It needs
  an agent another process can reach (a socket path, or libvirt); for a connected fd or
  a fake transport there is none.

While frozen the agent refuses every command but ping, info, sync, fsfreeze-status
and fsfreeze-thaw: such calls raise :class:`~qga_libvirt.errors.GuestFrozenError`.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Final

from ..commands import Commands
from ..errors import (
    AgentCommandError,
    FreezeTimeoutError,
    GuestAgentError,
    Hint,
    Remedy,
    ThawError,
)
from ..models import FsfreezeStatus
from .base import AgentBase
from .thawguard import Reach, ThawGuard

__all__ = ["FREEZE_TIMEOUT", "THAW_ATTEMPTS", "FreezeOps"]

FREEZE_TIMEOUT: Final = 60.0
"""Default longest frozen window of :meth:`FreezeOps.frozen`, in seconds."""
THAW_ATTEMPTS: Final = 5
"""Thaws tried before :class:`~qga_libvirt.errors.ThawError` (backoff 0.1 s, x2)."""
_CALL_TIMEOUT: Final = 30.0  # at least, for freeze and thaw: a freeze syncs every disk
_DOMAIN: Final = re.compile(r"domain '([^']+)'")


class FreezeOps(AgentBase):
    """Freeze the guest's filesystems for a snapshot, and always thaw them.

    Mixed into :class:`~qga_libvirt.GuestAgent`.
    """

    @contextlib.contextmanager
    def frozen(
        self,
        mountpoints: Sequence[str] | None = None,
        *,
        timeout: float | None = FREEZE_TIMEOUT,
    ) -> Iterator[int]:
        """Freeze the guest's filesystems for the ``with`` block; yields how many froze.

        ``mountpoints``: only these (guest-fsfreeze-freeze-list; ones the guest does not
        have are ignored), else all. ``timeout``: the longest frozen window in seconds
        (None: no watchdog). Thaws on leaving the block, retrying on failure.

        Raises:
            ThawError: the guest could not be thawed: it is STILL FROZEN (the message
                says how to thaw it by hand). Raised over the body's own exception,
                which stays its ``__context__``.
            FreezeTimeoutError: the body outlived ``timeout`` and the watchdog thawed
                before it ended (when the body raised, its exception gets a note
                instead).
            GuestFrozenError: the guest is already frozen (by someone else: left so).
            AgentCommandError: the agent could not freeze (it thaws what it froze).
            GuestAgentError: the freeze request failed; the guest was thawed first.
        """
        agent = self.with_timeout(max(self.timeout, _CALL_TIMEOUT))
        reach = Reach.of(self.transport)
        guard = ThawGuard.start(reach, timeout) if reach is not None else None
        try:
            if mountpoints is None:
                count = agent.fsfreeze_freeze()
            else:
                count = agent.fsfreeze_freeze_list(mountpoints)
        except AgentCommandError:
            if guard is not None:
                guard.release()  # refused: nothing of ours is frozen
            raise
        except BaseException:
            # The freeze may have happened (its reply did not come back; Ctrl-C while
            # it was on its way): thaw, then let the original error go on.
            agent._thaw(guard)
            raise
        watchdog = _Watchdog(agent, timeout) if timeout is not None else None
        body_error: BaseException | None = None
        try:
            yield count
        except BaseException as exc:
            body_error = exc
            raise
        finally:
            if watchdog is not None:
                watchdog.stop()
            agent._thaw(guard)  # again after the watchdog: a thaw of thawed filesystems is a no-op
            if watchdog is not None and watchdog.fired:
                late = (
                    f"the filesystems of {self.target} were thawed by the watchdog after "
                    f"{timeout:g} s, before the frozen block ended: what it did after that "
                    "is not consistent"
                )
                hint = Hint(Remedy.LONGER_FREEZE, "raise frozen(timeout=) or do less while frozen")
                if body_error is None:
                    raise FreezeTimeoutError(late, target=self.target, hint=hint)
                body_error.add_note(f"{late}; {hint.text}")

    def _thaw(self, guard: ThawGuard | None = None) -> int:
        """Thaw, retrying with a backoff; succeed also when the guest reports thawed.

        Then ``guard`` is released; if thawing failed it is abandoned instead, so that it
        keeps trying once this process lets go of the agent.

        Raises:
            ThawError: every attempt failed and the guest is not known to be thawed.
        """
        delay = 0.1
        last: BaseException | None = None
        for attempt in range(1, THAW_ATTEMPTS + 1):
            try:
                count = self.fsfreeze_thaw()
            except Exception as exc:  # whatever broke, the guest must not stay frozen silently
                last = exc
            else:
                if guard is not None:
                    guard.release()
                return count
            with contextlib.suppress(Exception):
                if self.fsfreeze_status() == FsfreezeStatus.THAWED:
                    if guard is not None:
                        guard.release()
                    return 0
            if attempt < THAW_ATTEMPTS:
                time.sleep(delay)
                delay *= 2
        if guard is not None:
            guard.abandon()
        cause = last if isinstance(last, GuestAgentError) else None
        keeps_trying = (
            f" (a guard process, pid {guard.pid}, keeps trying as soon as this process lets "
            "go of the agent)"
            if guard is not None
            else ""
        )
        raise ThawError(
            f"the filesystems of {self.target} are STILL FROZEN: "
            f"{Commands.fsfreeze_thaw.wire} failed {THAW_ATTEMPTS} times ({last!s})"
            f"{keeps_trying}. Until they are thawed, every write in the guest blocks",
            hint=Hint(
                Remedy.THAW,
                f"thaw them now with {_how_to_thaw(self.target)}",
                {"target": self.target},
            ),
            attempts=THAW_ATTEMPTS,
            cause=cause,
            target=self.target,
            command=Commands.fsfreeze_thaw.wire,
        ) from last


class _Watchdog:
    """Thaws once ``timeout`` seconds have passed, unless stopped before."""

    def __init__(self, agent: FreezeOps, timeout: float) -> None:
        self._agent = agent
        self._stopped = threading.Event()
        self.fired = False
        self._thread = threading.Thread(
            target=self._watch, args=(timeout,), name=f"qga thaw {agent.target}", daemon=True
        )
        self._thread.start()

    def _watch(self, timeout: float) -> None:
        if self._stopped.wait(timeout):
            return
        self.fired = True
        with contextlib.suppress(GuestAgentError):  # the block's exit thaws (and reports) again
            self._agent._thaw()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()


def _how_to_thaw(target: str) -> str:
    found = _DOMAIN.search(target)
    if found:
        name = found[1]
        return f"`qga {name} fsfreeze-thaw` or `virsh domfsthaw {name}`"
    return (
        f"{Commands.fsfreeze_thaw.wire} sent to {target} "
        "(e.g. GuestAgent.from_socket(...).fsfreeze_thaw())"
    )
