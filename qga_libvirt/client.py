"""GuestAgent: the typed client, over any transport."""

from __future__ import annotations

import difflib
import logging
import os
import socket
import time
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from . import wire
from .commands import (
    Arguments,
    Command,
    Commands,
    by_method_name,
    by_wire_name,
    known_wire_names,
)
from .enums import FsfreezeStatus
from .errors import (
    AgentCommandError,
    Availability,
    CommandDisabledError,
    GuestAgentError,
    agent_error,
)
from .operations.credentials import CredentialOps
from .operations.freeze import FreezeOps
from .operations.power import PowerOps
from .operations.run import RunOps
from .protocol import Reply
from .transports.base import Request, Transport
from .transports.socket import DEFAULT_IDLE_TIMEOUT, SocketTransport

if TYPE_CHECKING:
    from .models import AgentInfo, OsInfo
    from .transports.domain import Backend

__all__ = ["DEFAULT_TIMEOUT", "GuestAgent"]

DEFAULT_TIMEOUT = 5.0


def _os_family(info: OsInfo) -> str | None:
    """The family the declarations' platforms speak of: Linux, Windows, FreeBSD."""
    if info.id == "mswindows" or (info.name or "").lower().startswith("microsoft windows"):
        return "Windows"
    if info.id == "freebsd" or (info.kernel_version or "").startswith("FreeBSD"):
        return "FreeBSD"
    return "Linux" if info.kernel_release else None


def _newer_argument(request: Request, desc: str) -> tuple[str, str] | None:
    """``(what, since)`` when the request used an argument form that ``desc`` names and
    that is newer than the command (capture-output modes)."""
    declared = by_wire_name(request.command)
    if declared is None or not request.arguments:
        return None
    for argument, since, what in declared.facts.newer_arguments:
        if argument in request.arguments and argument in desc:
            return what, since
    return None


class _Shared:
    """State shared by an agent and its :meth:`GuestAgent.with_timeout` views."""

    __slots__ = ("guest_os", "info")

    def __init__(self) -> None:
        self.info: AgentInfo | None = None
        self.guest_os: str | None = None


class GuestAgent(RunOps, FreezeOps, PowerOps, CredentialOps):
    """A QEMU guest agent, reached through a transport.

    Every QGA command is a typed method (see :class:`~qga_libvirt.commands.Commands`);
    :meth:`call` is the raw escape hatch. Use as a context manager, or call :meth:`close`.

    Args:
        transport: how to reach the agent (:class:`SocketTransport`, libvirt, a fake).
        timeout: default seconds to wait for each reply; :meth:`with_timeout` gives a view
            with another default, ``call(..., timeout=)`` overrides it once.
    """

    def __init__(self, transport: Transport, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.transport = transport
        self.timeout = timeout
        self._shared = _Shared()

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

    def __repr__(self) -> str:
        return f"<GuestAgent {self.target}>"

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
        declared = by_wire_name(command)
        replies = declared.facts.replies if declared is not None else True
        request = Request(command, dict(arguments) if arguments else None, replies)
        reply = self._execute(request, self.timeout if timeout is None else timeout)
        if reply.is_error:
            raise self._error(request, reply)
        return reply.value

    def _invoke(self, command: Command[Any, Any], arguments: Arguments) -> Any:
        request = Request(command.wire, arguments, command.facts.replies)
        reply = self._execute(request, self.timeout)
        if reply.is_error:
            raise self._error(request, reply)
        if not command.returns:
            return None
        value = command.parse(reply.value)
        from .models import AgentInfo, OsInfo  # parse() imported them

        if isinstance(value, AgentInfo):
            self._shared.info = value
        elif isinstance(value, OsInfo):
            self._shared.guest_os = _os_family(value)
        return value

    def _execute(self, request: Request, timeout: float) -> Reply:
        """Every call goes through here: the wire trace (see :mod:`qga_libvirt.wire`)."""
        if not wire.log.isEnabledFor(logging.DEBUG):
            return self.transport.execute(request, timeout)
        target = self.target
        wire.log.debug(wire.describe_request(target, request.command, request.arguments))
        start = time.perf_counter()
        try:
            reply = self.transport.execute(request, timeout)
        except BaseException as exc:
            took = time.perf_counter() - start
            wire.log.debug(wire.describe_reply(target, request.command, took, failure=exc))
            raise
        took = time.perf_counter() - start
        if reply.is_error:
            error = (str(reply.error_class), str(reply.desc))
            line = wire.describe_reply(target, request.command, took, error=error)
        else:
            line = wire.describe_reply(target, request.command, took, value=reply.value)
        wire.log.debug(line)
        return reply

    def _error(self, request: Request, reply: Reply) -> AgentCommandError:
        command = request.command
        error_class, desc = reply.error_class, reply.desc
        assert error_class is not None
        assert desc is not None
        version = None
        availability = None
        if command != Commands.info.wire and (
            error_class == "CommandNotFound" or _newer_argument(request, desc) is not None
        ):
            # One or two more round trips, after a refusal only: the message can then
            # say why (too old an agent, another OS's command, a typo).
            version = self._version_for_message()
            availability = self._availability(request, desc)

        def typed(frozen: bool = False) -> AgentCommandError:
            return agent_error(
                error_class,
                desc,
                target=self.target,
                command=command,
                agent_version=version,
                frozen=frozen,
                availability=availability,
            )

        error = typed()
        if type(error) is CommandDisabledError and self._frozen_now(command):
            error = typed(frozen=True)
        return error

    def _availability(self, request: Request, desc: str) -> Availability:
        declared = by_wire_name(request.command)
        if declared is None:
            names = set(known_wire_names())
            if self._shared.info is not None:
                names.update(entry.name for entry in self._shared.info.supported_commands)
            close = difflib.get_close_matches(request.command, sorted(names), n=1, cutoff=0.8)
            return Availability(declared=False, suggestion=close[0] if close else None)
        facts = declared.facts
        guest_os = self._guest_os_for_message() if facts.platforms != "all" else None
        since = facts.since_on(guest_os) if guest_os else facts.since
        return Availability(
            since=since or facts.since,
            platforms=facts.platform_names,
            on_guest_os=None if guest_os is None else since is not None,
            guest_os=guest_os,
            argument=_newer_argument(request, desc),
        )

    def _guest_os_for_message(self) -> str | None:
        if self._shared.guest_os is None:
            try:
                self.get_osinfo()
            except Exception:  # the error being reported matters more than this detail
                return None
        return self._shared.guest_os

    def _frozen_now(self, refused: str) -> bool:
        # Not every agent says that a command is disabled because of a freeze (the
        # --block-rpcs wording is the same); fsfreeze-status still runs while frozen, so
        # one more round trip, after a refusal only, tells the two apart.
        declared = by_wire_name(refused)
        if declared is not None and declared.facts.frozen_safe:
            return False
        try:
            return self.fsfreeze_status() == FsfreezeStatus.FROZEN
        except GuestAgentError:
            return False

    def _version_for_message(self) -> str | None:
        if self._shared.info is None:
            try:
                self.info()
            except Exception:  # the error being reported matters more than this detail
                return None
        return self._shared.info.version if self._shared.info else None

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
        if refresh or self._shared.info is None:
            return self.info()
        return self._shared.info

    def supports(self, command: str | Command[Any, Any]) -> bool:
        """Whether the agent knows ``command`` and has it enabled.

        ``command`` is a wire name (``"guest-get-osinfo"``, declared here or not), a
        method name (``"get_osinfo"``) or a declaration (``Commands.get_osinfo``). Asks
        guest-info the first time (see :meth:`capabilities`).

        Raises:
            GuestAgentError: guest-info failed (as :meth:`call`).
        """
        if isinstance(command, Command):
            wire = command.wire
        else:
            declared = by_method_name(command)
            wire = declared.wire if declared is not None else command
        entry = self.capabilities().command(wire)
        return entry is not None and entry.enabled

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
