"""What every operation stands on, declared once.

:class:`AgentBase` is the typed commands plus what the operations share: the transport,
the default timeout, :attr:`~AgentBase.target`, :meth:`~AgentBase.with_timeout` and
:meth:`~AgentBase.wait_for_agent` (implemented here), and the guest-shell helpers
(declared here, implemented by :class:`~qga_libvirt.operations.run.RunOps`, as
:class:`~qga_libvirt.commands.Commands` declares ``_invoke`` for the client). Every
operation mixin derives from it (:class:`~qga_libvirt.operations.run.RunOps` from
:class:`~qga_libvirt.operations.files.FileOps`, whose transfers it uses), so no operation
restates another's signatures; :class:`~qga_libvirt.GuestAgent` composes them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TypeVar

from ..commands import Commands
from ..core import AgentCore
from ..steps import Program
from ..transports.base import Transport, features_of

__all__ = ["AgentBase"]

T = TypeVar("T")


class AgentBase(AgentCore, Commands):
    """The typed commands over a blocking transport, and what the operations share."""

    transport: Transport

    def wait_for_agent(self, timeout: float = 60.0) -> None:
        """Wait until the agent answers a ping: for a guest that is booting or rebooting.

        Through libvirt, with an event loop running
        (:func:`~qga_libvirt.discovery.start_event_loop`), it wakes on libvirt's agent
        lifecycle event; otherwise it pings with a backoff from 50 ms to 1 s. Errors that
        mean "not yet" (agent not connected or unresponsive, socket not there yet,
        timeouts) are waited out.

        Raises:
            AgentTimeoutError: it did not answer within ``timeout``; the last error is
                its ``__cause__``.
            GuestAgentError: an error that waiting cannot cure (no such domain, no agent
                channel, domain not running).
        """
        events = features_of(self.transport).agent_events
        with (
            events.agent_connected_events() if events is not None else contextlib.nullcontext()
        ) as woken:
            self._drive(self._wait_for_agent_steps(timeout, woken))

    def _drive(self, program: Program[T]) -> T:
        """Run a program of :mod:`~qga_libvirt.steps` with blocking calls (the client)."""
        raise NotImplementedError

    # --- the guest-shell helpers: implemented by RunOps ---------------------------------

    def _posix_guest(self) -> bool:
        """Whether the guest has a POSIX shell (not Windows); asked once per transport."""
        raise NotImplementedError

    def _exec_and_wait(self, argv: Sequence[str]) -> int | None:
        """Run a helper of ours to its end; its exit code (None: killed, or still running
        at the bound)."""
        raise NotImplementedError
