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
import copy
import threading
import time
from collections.abc import Sequence
from typing import Self

from ..commands import Commands
from ..errors import (
    AgentNotConfiguredError,
    AgentNotConnectedError,
    AgentTimeoutError,
    AgentUnreachableError,
    ConnectionLostError,
    DomainNotFoundError,
    GuestAgentError,
)
from ..transports.base import Transport, features_of

__all__ = ["AgentBase"]


class AgentBase(Commands):
    """The typed commands over a transport, and what the operations share."""

    transport: Transport
    timeout: float

    @property
    def target(self) -> str:
        """What this agent is reached through, e.g. ``socket /run/qga.sock``."""
        return self.transport.target

    def with_timeout(self, timeout: float) -> Self:
        """A view of this agent whose calls wait up to ``timeout`` seconds.

        ``agent.with_timeout(60).fstrim()``: same connection, same cached info.
        """
        view = copy.copy(self)
        view.timeout = timeout
        return view

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
            self._wait_for_agent(timeout, woken)

    def _wait_for_agent(self, timeout: float, woken: threading.Event | None) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            remaining = deadline - time.monotonic()
            try:
                self.with_timeout(max(0.1, min(remaining, 2.0))).ping()
                return
            except (AgentTimeoutError, AgentNotConnectedError, ConnectionLostError) as exc:
                last: GuestAgentError = exc
            except AgentUnreachableError as exc:
                if isinstance(exc, DomainNotFoundError | AgentNotConfiguredError):
                    raise
                last = exc
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AgentTimeoutError(  # the last error's hint (wait for it) is moot here
                    f"the agent of {self.target} did not answer within {timeout:g} s: "
                    f"{last.message}",
                    target=self.target,
                    command=Commands.ping.wire,
                ) from last
            if woken is not None:  # an event wakes us: poll rarely
                woken.wait(min(max(delay, 1.0), remaining))
                woken.clear()
            else:
                time.sleep(min(delay, remaining))
            delay = min(delay * 2, 1.0)

    # --- the guest-shell helpers: implemented by RunOps ---------------------------------

    def _posix_guest(self) -> bool:
        """Whether the guest has a POSIX shell (not Windows); asked once per transport."""
        raise NotImplementedError

    def _exec_and_wait(self, argv: Sequence[str]) -> int | None:
        """Run a helper of ours to its end; its exit code (None: killed, or still running
        at the bound)."""
        raise NotImplementedError
