"""Shut down, reboot and halt the guest, and wait for the agent to go and come back.

``guest-shutdown`` sends no reply on success. On the raw-socket backend a ``guest-sync``
fence follows it: its answer confirms that the agent took the request (a timeout is
never taken for success). Through libvirt the raw command is unreliable (libvirt
reports "not available for now" or "disappeared while executing command" although the
guest goes down, measured), so :meth:`PowerOps.reboot` and :meth:`PowerOps.poweroff` use
libvirt's own agent-based calls there (``virDomainReboot``/``virDomainShutdownFlags``
with the ``GUEST_AGENT`` flag), which return once QEMU saw the guest reset or power
off. libvirt has no halt: :meth:`PowerOps.halt` sends the raw command, and the libvirt
transport takes "the agent disappeared while executing it" as accepted for a command
that sends no reply, since that is how a halting guest closes the channel.

Which transports offer the typed calls is their declared ``power`` feature
(:class:`~qga_libvirt.transports.base.DomainPower`), not their class.
"""

from __future__ import annotations

import time
from typing import Final

from ..commands import Commands
from ..errors import (
    AgentTimeoutError,
    AgentUnreachableError,
    ConnectionLostError,
    ShutdownTimeoutError,
)
from ..models import ShutdownMode
from ..transports.base import DomainPower, features_of
from .base import AgentBase

__all__ = ["PowerOps"]

_PING_TIMEOUT: Final = 1.0  # an agent that takes longer to answer a ping is going away
_POLL: Final = 0.2


class PowerOps(AgentBase):
    """Shut down, reboot and halt the guest, and wait for the agent to go and come back.

    Mixed into :class:`~qga_libvirt.GuestAgent`. The commands themselves are
    :meth:`shutdown` and ``suspend_*``; these are the conveniences around them.
    """

    def reboot(self, *, wait: float | None = None) -> None:
        """Reboot the guest through its agent.

        Returns once the agent accepted the request (through libvirt: once the guest
        reset). With ``wait`` (seconds, for both phases together) it then waits until
        the agent is gone (:meth:`wait_until_gone`) and answers again
        (:meth:`~qga_libvirt.GuestAgent.wait_for_agent`).

        Raises:
            ShutdownTimeoutError: ``wait`` passed and the agent still answered.
            AgentTimeoutError: ``wait`` passed before the agent came back.
            GuestAgentError: the request failed (agent refused, not connected, ...).
        """
        deadline = None if wait is None else time.monotonic() + wait
        self._power(ShutdownMode.REBOOT)
        if deadline is not None:
            self.wait_until_gone(_left(deadline))
            self.wait_for_agent(_left(deadline))

    def poweroff(self, *, wait: float | None = None) -> None:
        """Power the guest off through its agent (ACPI power-down after the OS shut down).

        Returns once the agent accepted the request (through libvirt: once QEMU saw the
        guest power off). With ``wait`` it then waits until the agent is gone and,
        through libvirt, until the domain has stopped.

        Raises:
            ShutdownTimeoutError: ``wait`` passed and the guest was still up.
            GuestAgentError: the request failed (agent refused, not connected, ...).
        """
        deadline = None if wait is None else time.monotonic() + wait
        self._power(ShutdownMode.POWERDOWN)
        if deadline is not None:
            self.wait_until_gone(_left(deadline))
            power = features_of(self.transport).power
            if power is not None:
                self._wait_stopped(power, deadline)

    def halt(self, *, wait: float | None = None) -> None:
        """Halt the guest: the OS stops, the VM stays on (its CPUs halted).

        With ``wait`` it then waits until the agent is gone.

        Raises: as :meth:`poweroff`.
        """
        deadline = None if wait is None else time.monotonic() + wait
        self._power(ShutdownMode.HALT)
        if deadline is not None:
            self.wait_until_gone(_left(deadline))

    def wait_until_gone(self, timeout: float = 60.0) -> None:
        """Wait until the guest's agent stops answering (or the domain stops running).

        Pings every 0.2 s, each allowed 1 s; gone means a ping timed
        out, the connection or socket went away, libvirt reports the agent
        disconnected, or the domain is no longer running. (A reboot faster than that
        polling would go unseen; guests take seconds.)

        Raises:
            ShutdownTimeoutError: the agent still answered after ``timeout`` seconds.
            GuestAgentError: an error that is not "gone" (e.g. the agent refused ping).
        """
        deadline = time.monotonic() + timeout
        power = features_of(self.transport).power
        while True:
            if power is not None and not power.running():
                return
            try:
                self.with_timeout(min(_PING_TIMEOUT, max(_left(deadline), 0.1))).ping()
            except (AgentTimeoutError, AgentUnreachableError, ConnectionLostError):
                return
            remaining = _left(deadline)
            if remaining <= 0:
                raise ShutdownTimeoutError(
                    f"the agent of {self.target} still answers after {timeout:g} s: the guest "
                    "did not go down (is it ignoring the request, or still shutting down?)",
                    target=self.target,
                    command=Commands.ping.wire,
                )
            time.sleep(min(_POLL, remaining))

    def _power(self, mode: ShutdownMode) -> None:
        power = features_of(self.transport).power
        if power is not None and mode == ShutdownMode.REBOOT:
            power.reboot()
        elif power is not None and mode == ShutdownMode.POWERDOWN:
            power.poweroff()
        else:
            self.shutdown(mode)

    def _wait_stopped(self, power: DomainPower, deadline: float) -> None:
        while power.running():
            if _left(deadline) <= 0:
                raise ShutdownTimeoutError(
                    f"{self.target} is still running: its agent is gone, but the guest has "
                    "not powered off (yet); virsh destroy forces it off",
                    target=self.target,
                )
            time.sleep(min(0.1, _left(deadline)))


def _left(deadline: float) -> float:
    return deadline - time.monotonic()
