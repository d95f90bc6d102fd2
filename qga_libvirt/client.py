"""GuestAgent: the typed client, over any transport."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

from . import wire
from .commands import Arguments, Command
from .core import DEFAULT_TIMEOUT, trace_reply, trace_request
from .operations.credentials import CredentialOps
from .operations.freeze import FreezeOps
from .operations.power import PowerOps
from .operations.run import RunOps
from .protocol import Reply
from .steps import Program, drive
from .transports.base import Request, Transport
from .transports.socket import DEFAULT_IDLE_TIMEOUT, SocketTransport

if TYPE_CHECKING:
    from .models import AgentInfo
    from .transports.domain import Backend

__all__ = ["DEFAULT_TIMEOUT", "GuestAgent"]

T = TypeVar("T")


class GuestAgent(RunOps, FreezeOps, PowerOps, CredentialOps):
    """A QEMU guest agent, reached through a transport.

    Every QGA command is a typed method (see :class:`~qga_libvirt.commands.Commands`);
    :meth:`call` is the raw escape hatch. Use as a context manager, or call :meth:`close`.

    Args:
        transport: how to reach the agent (:class:`SocketTransport`, libvirt, a fake).
        timeout: default seconds to wait for each reply; :meth:`with_timeout` gives a view
            with another default, ``call(..., timeout=)`` overrides it once.
    """

    transport: Transport

    def __init__(self, transport: Transport, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__(transport, timeout=timeout)

    @classmethod
    def from_socket(
        cls,
        path: str | os.PathLike[str],
        timeout: float = DEFAULT_TIMEOUT,
        *,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
    ) -> Self:
        """An agent on a unix-socket chardev (or a qemu-ga in ``unix-listen`` mode).

        Connects lazily, on the first call. ``idle_timeout`` is the sharing policy: the
        connection is given back after that many idle seconds (see
        :mod:`qga_libvirt.transports.socket`).
        """
        return cls(SocketTransport(path, idle_timeout=idle_timeout), timeout=timeout)

    @classmethod
    def from_fd(cls, fd: int | socket.socket, timeout: float = DEFAULT_TIMEOUT) -> Self:
        """Wrap an already connected stream socket (its fd is taken over and closed by us)."""
        sock = fd if isinstance(fd, socket.socket) else socket.socket(fileno=fd)
        return cls(SocketTransport(sock=sock, idle_timeout=None), timeout=timeout)

    @classmethod
    def from_domain(
        cls,
        domain: str | int | Any,
        uri: str | Any | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        backend: Backend = "auto",
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
    ) -> Self:
        """The agent of a libvirt domain, by name, UUID or ID (or an open ``virDomain``).

        ``uri`` is a libvirt URI, local or remote (``qemu+ssh://host/system``,
        ``qemu+tcp://...``), default like virsh (``$LIBVIRT_DEFAULT_URI``, else
        ``qemu:///system``), or an open ``virConnect``. ``backend``: ``"libvirt"``
        (``qemuAgentCommand``), ``"socket"`` (the channel's unix socket, for a channel
        libvirt does not hold, e.g. added through ``<qemu:commandline>``), or ``"auto"``.

        Raises:
            LibvirtConnectionError: libvirt is not reachable at the URI.
            DomainNotFoundError: no such domain.
            DomainNotRunningError: the domain is not running.
            AgentNotConfiguredError: the domain has no guest agent channel.

        Calls raise AgentNotConnectedError while no agent has opened the channel in the
        guest (not installed, or still booting: :meth:`wait_for_agent` waits for it).
        """
        from .transports.domain import open_domain_transport

        transport = open_domain_transport(domain, uri, backend=backend, idle_timeout=idle_timeout)
        return cls(transport, timeout=timeout)

    # --- calling ----------------------------------------------------------------------

    def call(
        self,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Run any command by wire name and return the reply's "return" value as sent.

        Commands that send no reply on success (guest-shutdown, guest-suspend-*) return
        None once the agent accepted them.

        Raises:
            AgentCommandError: the agent answered with an error (typed subclasses for
                disabled and unknown commands).
            GuestAgentError: the agent could not be reached, timed out, or the
                conversation broke.
        """
        return self._drive(self._call_steps(command, arguments, timeout))

    def _invoke(self, command: Command[Any, T], arguments: Arguments) -> T:
        return self._drive(self._invoke_steps(command, arguments))

    def _drive(self, program: Program[T]) -> T:
        return drive(program, self._execute)

    def _execute(self, request: Request, timeout: float) -> Reply:
        """Every call goes through here: the wire trace (see :mod:`qga_libvirt.wire`)."""
        if not wire.log.isEnabledFor(logging.DEBUG):
            return self.transport.execute(request, timeout)
        start = trace_request(self.target, request)
        try:
            reply = self.transport.execute(request, timeout)
        except BaseException as exc:
            trace_reply(self.target, request, start, failure=exc)
            raise
        trace_reply(self.target, request, start, reply=reply)
        return reply

    # --- capabilities -----------------------------------------------------------------

    def capabilities(self, *, refresh: bool = False) -> AgentInfo:
        """The agent's version and commands (guest-info), asked once and then cached.

        The cache is shared with the :meth:`with_timeout` views and filled by every
        :meth:`info` call. ``refresh=True`` asks again: after the guest's agent was
        upgraded or restarted, or after a freeze (a frozen agent reports all but the
        frozen-safe commands as disabled).

        Raises:
            GuestAgentError: guest-info failed (as :meth:`call`).
        """
        return self._drive(self._capabilities_steps(refresh))

    def supports(self, command: str | Command[Any, Any]) -> bool:
        """Whether the agent knows ``command`` and has it enabled.

        ``command`` is a wire name (``"guest-get-osinfo"``, declared here or not), a
        method name (``"get_osinfo"``) or a declaration (``Commands.get_osinfo``). Asks
        guest-info the first time (see :meth:`capabilities`).

        Raises:
            GuestAgentError: guest-info failed (as :meth:`call`).
        """
        return self._drive(self._supports_steps(command))

    # --- lifetime ---------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection. A closed agent cannot be used again."""
        self.transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
