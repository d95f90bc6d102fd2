"""What the blocking and the asyncio clients share: calling, errors, capabilities.

:class:`AgentCore` holds the transport, the default timeout and the cached agent info,
and writes each piece of calling logic once, as a program of
:mod:`~qga_libvirt.steps`: a raw call, a typed call (encode, send, parse), the typed
error of a refusal (which may ask the agent one or two more questions, to say why),
capabilities and the wait for an agent. :class:`~qga_libvirt.GuestAgent` drives these
programs with blocking calls, :class:`~qga_libvirt.AsyncGuestAgent` with awaits.
"""

from __future__ import annotations

import copy
import difflib
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar

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
    AgentNotConfiguredError,
    AgentNotConnectedError,
    AgentTimeoutError,
    AgentUnreachableError,
    Availability,
    CommandDisabledError,
    ConnectionLostError,
    DomainNotFoundError,
    GuestAgentError,
    agent_error,
)
from .protocol import Reply
from .steps import Call, Program, Sleep
from .transports.base import Request

if TYPE_CHECKING:
    from .models import AgentInfo, OsInfo

__all__ = ["DEFAULT_TIMEOUT", "AgentCore"]

DEFAULT_TIMEOUT = 5.0
T = TypeVar("T")


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


def trace_request(target: str, request: Request) -> float:
    """Log a request going out (see :mod:`qga_libvirt.wire`); the start time."""
    wire.log.debug(wire.describe_request(target, request.command, request.arguments))
    return time.perf_counter()


def trace_reply(
    target: str,
    request: Request,
    start: float,
    *,
    reply: Reply | None = None,
    failure: BaseException | None = None,
) -> None:
    """Log what came back for ``request``: a reply, or what was raised."""
    took = time.perf_counter() - start
    if reply is None:
        line = wire.describe_reply(target, request.command, took, failure=failure)
    elif reply.is_error:
        error = (str(reply.error_class), str(reply.desc))
        line = wire.describe_reply(target, request.command, took, error=error)
    else:
        line = wire.describe_reply(target, request.command, took, value=reply.value)
    wire.log.debug(line)


class _Shared:
    """State shared by an agent and its ``with_timeout`` views."""

    __slots__ = ("guest_os", "info")

    def __init__(self) -> None:
        self.info: AgentInfo | None = None
        self.guest_os: str | None = None


class AgentCore:
    """The transport, the default timeout, the cached agent info, and the programs
    that both clients drive. Not used directly: see :class:`~qga_libvirt.GuestAgent`
    and :class:`~qga_libvirt.AsyncGuestAgent`."""

    transport: Any
    """A :class:`~qga_libvirt.transports.base.Transport` (or its asyncio twin)."""

    def __init__(self, transport: Any, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.transport = transport
        self.timeout = timeout
        self._shared = _Shared()

    @property
    def target(self) -> str:
        """What this agent is reached through, e.g. ``socket /run/qga.sock``."""
        target: str = self.transport.target
        return target

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.target}>"

    def with_timeout(self, timeout: float) -> Self:
        """A view of this agent whose calls wait up to ``timeout`` seconds.

        ``agent.with_timeout(60).fstrim()``: same connection, same cached info.
        """
        view = copy.copy(self)
        view.timeout = timeout
        return view

    # --- programs ---------------------------------------------------------------------

    def _call_steps(
        self,
        command: str,
        arguments: Mapping[str, Any] | None,
        timeout: float | None,
    ) -> Program[Any]:
        declared = by_wire_name(command)
        replies = declared.facts.replies if declared is not None else True
        request = Request(command, dict(arguments) if arguments else None, replies)
        reply = yield Call(request, self.timeout if timeout is None else timeout)
        if reply.is_error:
            raise (yield from self._error_steps(request, reply))
        return reply.value

    def _invoke_steps(self, command: Command[Any, T], arguments: Arguments) -> Program[T]:
        request = Request(command.wire, arguments, command.facts.replies)
        reply: Reply = yield Call(request, self.timeout)
        if reply.is_error:
            raise (yield from self._error_steps(request, reply))
        if not command.returns:
            return None  # type: ignore[return-value]
        value = command.parse(reply.value)
        from .models import AgentInfo, OsInfo  # parse() imported them

        if isinstance(value, AgentInfo):
            self._shared.info = value
        elif isinstance(value, OsInfo):
            self._shared.guest_os = _os_family(value)
        return value

    def _error_steps(self, request: Request, reply: Reply) -> Program[AgentCommandError]:
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
            version = yield from self._version_for_message()
            availability = yield from self._availability(request, desc)

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
        if type(error) is CommandDisabledError and (yield from self._frozen_now(command)):
            error = typed(frozen=True)
        return error

    def _availability(self, request: Request, desc: str) -> Program[Availability]:
        declared = by_wire_name(request.command)
        if declared is None:
            names = set(known_wire_names())
            if self._shared.info is not None:
                names.update(entry.name for entry in self._shared.info.supported_commands)
            close = difflib.get_close_matches(request.command, sorted(names), n=1, cutoff=0.8)
            return Availability(declared=False, suggestion=close[0] if close else None)
        facts = declared.facts
        guest_os = (yield from self._guest_os_for_message()) if facts.platforms != "all" else None
        since = facts.since_on(guest_os) if guest_os else facts.since
        return Availability(
            since=since or facts.since,
            platforms=facts.platform_names,
            on_guest_os=None if guest_os is None else since is not None,
            guest_os=guest_os,
            argument=_newer_argument(request, desc),
        )

    def _guest_os_for_message(self) -> Program[str | None]:
        if self._shared.guest_os is None:
            try:
                yield from self._invoke_steps(Commands.get_osinfo, None)
            except Exception:  # the error being reported matters more than this detail
                return None
        return self._shared.guest_os

    def _frozen_now(self, refused: str) -> Program[bool]:
        # Not every agent says that a command is disabled because of a freeze (the
        # --block-rpcs wording is the same); fsfreeze-status still runs while frozen, so
        # one more round trip, after a refusal only, tells the two apart.
        declared = by_wire_name(refused)
        if declared is not None and declared.facts.frozen_safe:
            return False
        try:
            status = yield from self._invoke_steps(Commands.fsfreeze_status, None)
        except GuestAgentError:
            return False
        return status == FsfreezeStatus.FROZEN

    def _version_for_message(self) -> Program[str | None]:
        if self._shared.info is None:
            try:
                yield from self._invoke_steps(Commands.info, None)
            except Exception:  # the error being reported matters more than this detail
                return None
        return self._shared.info.version if self._shared.info else None

    def _capabilities_steps(self, refresh: bool) -> Program[AgentInfo]:
        if refresh or self._shared.info is None:
            return (yield from self._invoke_steps(Commands.info, None))
        return self._shared.info

    def _supports_steps(self, command: str | Command[Any, Any]) -> Program[bool]:
        if isinstance(command, Command):
            wire_name = command.wire
        else:
            declared = by_method_name(command)
            wire_name = declared.wire if declared is not None else command
        info = yield from self._capabilities_steps(False)
        entry = info.command(wire_name)
        return entry is not None and entry.enabled

    def _wait_for_agent_steps(self, timeout: float, woken: Any | None) -> Program[None]:
        """Ping until the agent answers (see ``wait_for_agent``); ``woken``, a
        :class:`threading.Event` set on libvirt's agent lifecycle event, or None."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            remaining = deadline - time.monotonic()
            try:
                yield from self._call_steps("guest-ping", None, max(0.1, min(remaining, 2.0)))
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
                    command="guest-ping",
                ) from last
            if woken is not None:  # an event wakes us: poll rarely
                yield Sleep(min(max(delay, 1.0), remaining), wake=woken)
                woken.clear()
            else:
                yield Sleep(min(delay, remaining))
            delay = min(delay * 2, 1.0)
