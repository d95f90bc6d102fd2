"""Every error qga-libvirt raises, in one tree.

::

    GuestAgentError                  .code .is_unreachable .target .command
    ├── AgentUnreachableError        1000  the agent could not be reached at all
    │   ├── LibvirtConnectionError           cannot connect to the libvirt URI
    │   ├── DomainNotFoundError              no such domain (name, UUID or ID)
    │   ├── DomainNotRunningError            the domain is shut off, paused, ...
    │   ├── AgentNotConfiguredError          the domain has no guest agent channel
    │   └── AgentNotConnectedError           channel present, no agent in the guest
    ├── AgentTimeoutError            1003  the agent did not answer within the timeout
    │   └── AgentUnresponsiveError           libvirt gave up on the agent (timeout or error)
    ├── CommandTimeoutError          1003  run(): the guest process outlived the timeout (.pid);
    │                                      the agent answered: it is still running
    ├── ShutdownTimeoutError         1003  the guest's agent still answers after the wait
    ├── ConnectionLostError          1001/1002  the connection broke while reading/writing
    ├── ProtocolError                1001  the conversation broke: garbage, id mismatch,
    │                                      a reply that breaks the schema (.reply kept)
    ├── RequestTooLargeError         1002  a request above what the backend carries safely
    ├── InvalidArgumentError         1002  an argument the agent cannot parse (.argument)
    ├── ReplyTooLargeError           1001  a reply above what the backend carries (lost)
    ├── TransferError                (the cause's)  a file transfer failed part-way:
    │                                      .transferred bytes reached the other side
    ├── LibvirtError                 1001  any other libvirt failure (.libvirt_code)
    ├── OutputLostError              (the cause's)  run(): a process's output did not come
    │                                      back (.pid; .guest_files where it is kept)
    ├── CommandFailedError           1004  run(check=True): non-zero exit or signal (.result)
    ├── ThawError                    (the cause's)  thawing failed: the guest is STILL FROZEN
    ├── FreezeTimeoutError           1003  frozen(): the body outlived the frozen window and
    │                                      the watchdog thawed before it ended
    └── AgentCommandError            1004  the agent answered with an error (.error_class .desc)
        ├── CommandDisabledError           disabled by --block-rpcs/--allow-rpcs
        │   └── GuestFrozenError           disabled because filesystems are frozen
        └── CommandNotFoundError           not in this agent: too old, not on this OS, a typo

Errors from below (OSError, json, libvirt) are never raised as they are: they become
one of these, with the original kept as ``__cause__``. Every message says what is wrong
and, where there is one, what to do about it.

Timeouts: :class:`AgentTimeoutError` means the AGENT did not answer in time (the
conversation is what failed). A guest process or a guest that outlived a wait while its
agent answered is not that: :class:`CommandTimeoutError` (the process still runs),
:class:`ShutdownTimeoutError` (the guest is still up) and :class:`FreezeTimeoutError`
stand beside it, with the same code 1003 and ``is_unreachable`` False, so that
``except AgentTimeoutError`` never catches "still running". Catch them together with
``except GuestAgentError as error: if error.code == ERR_TIMED_OUT``.

An error that reports another, raised ``from`` it (``raise TransferError(...) from
exc``), takes that error's ``code`` and ``is_unreachable``: the classes that fix no
code of their own (:class:`GuestAgentError` itself, :class:`TransferError`,
:class:`OutputLostError`, :class:`ThawError`, :class:`LibvirtError`) read them from
``__cause__`` when it is a :class:`GuestAgentError`. One mechanism: the error named in
``from`` is the one reported.

What to do is kept apart when it depends on who reads it: ``error.hint`` (a
:class:`Hint`) names the remedy (a :class:`Remedy`) and gives the library's wording,
which ``str(error)`` appends to ``error.message``; the ``qga`` command line words the
same remedy in its own terms (``qga DOMAIN wait`` rather than ``wait_for_agent()``).

``is_unreachable`` is True for every failure where the agent's own answer was not
obtained: connecting, writing, reading, a timeout, a reply that could not be read
(codes 1000-1003). It is False when the agent answered with an error (1004), and when a
request was refused before it was sent (RequestTooLargeError, InvalidArgumentError: the
agent was never asked), and when the agent answered that the guest is not done yet
(CommandTimeoutError, ShutdownTimeoutError). An error raised ``from`` another takes the
other's (see above).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Final

if TYPE_CHECKING:
    from .models import RunHandle, RunResult

__all__ = [
    "ERR_CANNOT_READ",
    "ERR_CANNOT_WRITE",
    "ERR_FROM_AGENT",
    "ERR_NO_CONNECT",
    "ERR_TIMED_OUT",
    "AgentCommandError",
    "AgentNotConfiguredError",
    "AgentNotConnectedError",
    "AgentTimeoutError",
    "AgentUnreachableError",
    "AgentUnresponsiveError",
    "Availability",
    "CommandDisabledError",
    "CommandFailedError",
    "CommandNotFoundError",
    "CommandTimeoutError",
    "ConnectionLostError",
    "DomainNotFoundError",
    "DomainNotRunningError",
    "FreezeTimeoutError",
    "GuestAgentError",
    "GuestFrozenError",
    "Hint",
    "InvalidArgumentError",
    "LibvirtConnectionError",
    "LibvirtError",
    "OutputLostError",
    "ProtocolError",
    "Remedy",
    "ReplyTooLargeError",
    "RequestTooLargeError",
    "ShutdownTimeoutError",
    "ThawError",
    "TransferError",
    "agent_error",
    "older",
]

ERR_NO_CONNECT: Final = 1000
"""Connecting to the agent failed."""
ERR_CANNOT_READ: Final = 1001
"""Reading from the agent failed, or what was read made no sense."""
ERR_CANNOT_WRITE: Final = 1002
"""Writing to the agent failed."""
ERR_TIMED_OUT: Final = 1003
"""No reply within the timeout: the agent may not be running in the guest."""
ERR_FROM_AGENT: Final = 1004
"""The agent answered with an error: see ``error_class`` and ``desc``."""


class Remedy(enum.Enum):
    """What can be done about an error, named once; each front end words it its own way.

    The details a remedy needs are in :attr:`Hint.details` (named below).
    """

    CHECK_DOMAIN = "check-domain"
    """The domain name may be wrong, or on another hypervisor (``uri``)."""
    WAIT_FOR_AGENT = "wait-for-agent"
    """The agent is not up yet: wait for it."""
    USE_BACKEND = "use-backend"
    """Reach the agent through another backend (``backend``: "socket" or "libvirt")."""
    COLLECT = "collect"
    """The process still runs: wait for it again, or kill it (``pid``)."""
    CAPTURE_IN_FILES = "capture-in-files"
    """The output is too large for the backend: capture it in guest files, or use the
    socket backend."""
    COLLECT_LATER = "collect-later"
    """The output may still be with the agent: ask for it again later (``pid``)."""
    READ_GUEST_FILES = "read-guest-files"
    """The output is in guest files: read them, then remove them (``files``)."""
    THAW = "thaw"
    """The filesystems are still frozen: thaw them now (``target``)."""
    LONGER_FREEZE = "longer-freeze"
    """The frozen window was too short: allow more time, or do less while frozen."""
    LONGER_FLEET_BOUND = "longer-fleet-bound"
    """A fleet target outlived its wall-clock bound: allow it more time."""
    SMALLER_WRITES = "smaller-writes"
    """The request is too large for the backend: send the data in chunks, or use the
    socket backend."""
    SHARE_SOCKET = "share-socket"
    """Other clients hold the agent's socket: share one connection, or let them give it
    back sooner."""
    WRITE_IN_PLACE = "write-in-place"
    """The guest cannot replace a file atomically (no POSIX shell, or guest-exec refused):
    write it in place instead."""


@dataclass(frozen=True)
class Hint:
    """What to do about an error: the remedy, and the library's words for it.

    Attributes:
        action: the remedy, for front ends that word it themselves.
        text: the library's wording (Python terms), appended to ``str(error)``.
        details: what the remedy needs (see :class:`Remedy`).
    """

    action: Remedy
    text: str
    details: Mapping[str, Any] = field(default_factory=dict)


class GuestAgentError(Exception):
    """Base of every error: something went wrong talking to a guest agent.

    Attributes:
        code: one of the ``ERR_*`` constants.
        is_unreachable: True when the agent's own answer was not obtained (connect, write,
            read, timeout); False when it answered with an error, or when the request was
            refused before sending. See the module docs.
        target: what was being talked to, e.g. ``"socket /run/qga.sock"``, ``"domain 'web1'"``.
        command: the wire name of the command being run, when there was one.
        message: what went wrong, without the hint.
        hint: what to do about it, when that depends on the reader (see :class:`Hint`).

    Raised ``from`` another :class:`GuestAgentError` (an error that reports another, e.g.
    what stopped a transfer), a class that fixes no ``code`` of its own takes the
    other's ``code`` and ``is_unreachable``.
    """

    default_unreachable: ClassVar[bool | None] = None  # None: from the code (not 1004)

    def __init__(
        self,
        message: str,
        *,
        target: str | None = None,
        command: str | None = None,
        is_unreachable: bool | None = None,
        hint: Hint | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.target = target
        self.command = command
        self._code: int | None = None
        self._unreachable = is_unreachable

    @property
    def code(self) -> int:
        """Fixed by the class where it says so; else the reported error's (``__cause__``)."""
        if self._code is not None:
            return self._code
        reported = self._reported()
        return ERR_CANNOT_READ if reported is None else reported.code

    @code.setter
    def code(self, value: int) -> None:
        self._code = value

    @property
    def is_unreachable(self) -> bool:
        """See the class docs; given, else the class's, else the reported error's."""
        if self._unreachable is not None:
            return self._unreachable
        if self.default_unreachable is not None:
            return self.default_unreachable
        reported = self._reported()
        if reported is not None:
            return reported.is_unreachable
        return self.code != ERR_FROM_AGENT

    def _reported(self) -> GuestAgentError | None:
        """The error this one reports: its ``__cause__``, unless this one has a code."""
        if self._code is not None or not isinstance(self.__cause__, GuestAgentError):
            return None
        below = type(self).__mro__[: type(self).__mro__.index(GuestAgentError)]
        if any("code" in vars(cls) for cls in below):
            return None  # the class fixes its code: it is its own kind of error
        return self.__cause__

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message}; {self.hint.text}"


class AgentUnreachableError(GuestAgentError):
    """The agent could not be reached: no socket, connection refused, VM not running."""

    code = ERR_NO_CONNECT
    default_unreachable = True


class LibvirtConnectionError(AgentUnreachableError):
    """libvirt could not be reached at the URI (daemon down, wrong URI, no permission)."""


class DomainNotFoundError(AgentUnreachableError):
    """No domain has that name, UUID or ID."""


class DomainNotRunningError(AgentUnreachableError):
    """The domain exists but is not running: start it (virsh start NAME), or resume it
    if it is paused (virsh resume NAME)."""


class AgentNotConfiguredError(AgentUnreachableError):
    """The domain has no guest agent channel in its XML."""


class AgentNotConnectedError(AgentUnreachableError):
    """The channel exists but no agent has opened it in the guest (not installed/started,
    or the guest is still booting)."""


class AgentTimeoutError(GuestAgentError):
    """No reply came within the timeout.

    The message says whether the request was sent (then it may still be running in the
    guest) or not (the agent did not even answer the resync before it). The connection
    is resynchronised before it is used again, so a late reply never reaches another
    caller.
    """

    code = ERR_TIMED_OUT


class AgentUnresponsiveError(AgentTimeoutError):
    """libvirt reports the agent unresponsive: it timed out, or libvirt closed the channel
    after an error."""


class ConnectionLostError(GuestAgentError):
    """The connection broke while a request was being written or its reply read."""

    def __init__(self, message: str, *, writing: bool = False, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.code = ERR_CANNOT_WRITE if writing else ERR_CANNOT_READ


class ProtocolError(GuestAgentError):
    """The agent sent something that is not a valid reply to what was asked.

    Attributes:
        reply: the offending reply (bytes as read, or the decoded JSON value).
    """

    code = ERR_CANNOT_READ

    def __init__(self, message: str, *, reply: object = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.reply = reply


class RequestTooLargeError(GuestAgentError):
    """The encoded request is larger than the backend carries safely (libvirt: 64 KiB).

    Nothing was sent. Use the chunking helpers (file transfer) or the socket backend.
    """

    code = ERR_CANNOT_WRITE
    default_unreachable = False  # the agent was never asked


class InvalidArgumentError(GuestAgentError, ValueError):
    """An argument the agent cannot parse: a string with a lone surrogate (a file name
    that is not UTF-8, decoded with surrogateescape), NaN or infinity, a value JSON has no
    form for. Nothing was sent; the agent would have answered with an id-less parse error.

    Attributes:
        argument: where the value is, e.g. ``argument path``, ``argument arg, item 1``
            (never the value).
    """

    code = ERR_CANNOT_WRITE
    default_unreachable = False  # the agent was never asked

    def __init__(self, message: str, *, argument: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.argument = argument


class TransferError(GuestAgentError):
    """A file transfer failed part-way; the message says how far it got.

    Attributes:
        transferred: bytes that reached the other side before the failure.
        total: bytes that were to be transferred, when known.
        path: the guest path.

    Raised ``from`` the error that stopped it; ``code`` and ``is_unreachable`` are its.
    """

    def __init__(
        self,
        message: str,
        *,
        transferred: int,
        total: int | None,
        path: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.transferred = transferred
        self.total = total
        self.path = path


class ReplyTooLargeError(GuestAgentError):
    """The agent's reply was larger than the backend carries (libvirt: ~4 MiB), and lost."""

    code = ERR_CANNOT_READ


class LibvirtError(GuestAgentError):
    """A libvirt failure that has no more specific error.

    Attributes:
        libvirt_code: libvirt's error code (``VIR_ERR_*``).
    """

    def __init__(self, message: str, *, libvirt_code: int | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.libvirt_code = libvirt_code


class AgentCommandError(GuestAgentError):
    """The agent ran the command and answered with an error.

    Attributes:
        error_class: the agent's error class, e.g. ``"GenericError"``.
        desc: the agent's description, as it sent it.
    """

    code = ERR_FROM_AGENT

    def __init__(self, message: str, *, error_class: str, desc: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.error_class = error_class
        self.desc = desc


class CommandDisabledError(AgentCommandError):
    """The agent knows the command but has it disabled (``--block-rpcs``/``--allow-rpcs``)."""


class GuestFrozenError(CommandDisabledError):
    """The command is refused because the guest's filesystems are frozen: thaw them first."""


class CommandNotFoundError(AgentCommandError):
    """The agent does not have the command: its version is too old, the guest's operating
    system has no such command (guest-get-devices exists only on Windows), or the name is
    not a command at all (the message suggests the closest one)."""


@dataclass(frozen=True)
class Availability:
    """What is known of a refused command, for the message of the agent's refusal.

    The client fills it from the command's declaration (its ``since`` and platforms), the
    agent's version and the guest's operating system, where it knows them.

    Attributes:
        declared: False when no declaration has this wire name (a typo, or a command
            of another agent).
        since: the first qemu-guest-agent version that has the command (on the guest's
            operating system, when that is known).
        platforms: the operating systems whose agent has it (``"Windows"``), when not all.
        on_guest_os: False when the guest's operating system is known not to have it.
        guest_os: the guest's operating system (``"Linux"``, ``"Windows"``), when known.
        suggestion: the closest known wire name, for a name nobody declared.
        argument: ``(what, since)`` for an argument form newer than the command itself
            (``("capture-output modes", "8.0")``), when the request used it.
    """

    declared: bool = True
    since: str | None = None
    platforms: str | None = None
    on_guest_os: bool | None = None
    guest_os: str | None = None
    suggestion: str | None = None
    argument: tuple[str, str] | None = None


def older(version: str | None, than: str | None) -> bool:
    """Whether agent ``version`` ("7.2.0", "10.0.2") is older than ``than`` ("8.0").

    False when either is unknown or not a version.
    """
    if version is None or than is None:
        return False
    try:
        have = tuple(int(part) for part in version.split("-")[0].split(".")[:3])
        need = tuple(int(part) for part in than.split(".")[:3])
    except ValueError:
        return False
    return have < need


def agent_error(
    error_class: str,
    desc: str,
    *,
    target: str | None,
    command: str | None,
    agent_version: str | None = None,
    frozen: bool = False,
    availability: Availability | None = None,
) -> AgentCommandError:
    """Turn an agent ``{"error": {"class", "desc"}}`` into the matching typed error.

    This is the one place where the agent's error texts are interpreted; every backend
    (raw socket, libvirt) goes through it. ``availability`` (what the declarations and
    the guest say of the command) lets the message tell a command that the guest's
    operating system does not have, or that needs a newer agent, or a misspelt name,
    from one that the agent's configuration disabled.
    """
    known = availability or Availability()
    name = command or "command"
    where = f" on {target}" if target else ""
    version = f" (agent version {agent_version})" if agent_version else ""
    runs = f"; this guest runs {agent_version}" if agent_version else ""
    cls: type[AgentCommandError] = AgentCommandError
    if error_class == "CommandNotFound":
        lowered = desc.lower()
        disabled = "has been disabled" in lowered
        if known.on_guest_os is False or (
            # Not found by an agent new enough to have it: its OS does not.
            known.on_guest_os is None
            and known.platforms is not None
            and not disabled
            and not older(agent_version, known.since)
        ):
            # 7.2 lists the Windows-only commands as disabled on Linux; 10.0 omits them:
            # either way the guest's OS has no such command.
            cls = CommandNotFoundError
            guest = f"; this guest runs {known.guest_os}" if known.guest_os else ""
            message = f"{name} exists only on {known.platforms} guests{guest}{where} [{desc}]"
            return cls(message, error_class=error_class, desc=desc, target=target, command=command)
        if disabled:
            if frozen or "frozen state" in lowered:
                cls = GuestFrozenError
                hint = "the guest's filesystems are frozen; thaw them (guest-fsfreeze-thaw) first"
            else:
                cls = CommandDisabledError
                hint = "it is disabled in the agent's configuration (--block-rpcs/--allow-rpcs)"
            message = f"{name} refused{where}{version}: {hint} [{desc}]"
        elif not known.declared:
            cls = CommandNotFoundError
            close = f"; did you mean {known.suggestion}?" if known.suggestion else ""
            message = f"{name} is unknown to the agent{where}{version}{close} [{desc}]"
        elif older(agent_version, known.since):
            cls = CommandNotFoundError
            message = (
                f"{name} needs qemu-guest-agent {known.since} or newer{runs}{where}: "
                f"upgrade qemu-guest-agent in the guest [{desc}]"
            )
        else:
            cls = CommandNotFoundError
            hint = "this agent does not have it; upgrade qemu-guest-agent in the guest"
            message = f"{name} refused{where}{version}: {hint} [{desc}]"
    elif known.argument is not None and older(agent_version, known.argument[1]):
        what, since = known.argument
        message = (
            f"{name} failed{where}: {what} need qemu-guest-agent {since} or newer{runs} "
            f"[{error_class}: {desc}]"
        )
    else:
        message = f"{name} failed{where}: {desc} [{error_class}]"
    return cls(message, error_class=error_class, desc=desc, target=target, command=command)


class CommandTimeoutError(GuestAgentError):
    """``run()``: the guest process was still running when the timeout passed (or its
    status could not be had in time).

    Not an :class:`AgentTimeoutError`: the run's own timeout passed, whatever the agent
    did (code 1003 all the same). ``is_unreachable`` is False when the agent answered
    that the process still runs, True when its last status request went unanswered.

    It keeps running in the guest, and its output is kept (by the agent, or in guest
    files): ``agent.collect(error.handle)`` waits for it again and returns its result,
    ``agent.cancel(error.handle)`` kills it and removes its files. The handle is plain
    data: ``error.handle.dumps()`` for another process.

    Attributes:
        handle: the :class:`~qga_libvirt.operations.run.RunHandle` (None when raised
            by code that has none).
        pid: the guest process id.
        argv: the command line.
        timeout: the seconds that passed.
    """

    code = ERR_TIMED_OUT
    default_unreachable = False  # the agent answered: the process is still running

    def __init__(
        self,
        message: str,
        *,
        pid: int,
        argv: Sequence[str],
        timeout: float,
        handle: RunHandle | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.pid = pid
        self.argv = tuple(argv)
        self.timeout = timeout
        self.handle = handle


class ShutdownTimeoutError(GuestAgentError):
    """The guest did not go down within the wait: its agent still answers (or, through
    libvirt, the domain still runs).

    Not an :class:`AgentTimeoutError`: the guest is up, not lost (code 1003;
    ``is_unreachable`` is False).
    """

    code = ERR_TIMED_OUT
    default_unreachable = False  # the agent (or libvirt) answered: the guest is still up


class OutputLostError(GuestAgentError):
    """``run()``: the process ran (or may have), but its output did not come back.

    The agent hands a finished process's status and output over once; when that reply
    is lost in transport, or is too large for the backend, the output is gone, unless
    it went to guest files (``guest_files`` then lists them: read them with
    ``read_file``, then remove them).

    Attributes:
        pid: the guest process id.
        guest_files: guest files that still hold the output (empty: it is gone).
        certain: True when the output is known to be gone or not collected; False when
            it may still be there (``collect(pid)`` once the agent answers again).

    Raised ``from`` the error that broke the transfer; ``code`` and ``is_unreachable``
    are its.
    """

    def __init__(
        self,
        message: str,
        *,
        pid: int,
        guest_files: Sequence[str] = (),
        certain: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.pid = pid
        self.guest_files = tuple(guest_files)
        self.certain = certain


class CommandFailedError(GuestAgentError):
    """``run(check=True)``: the guest process exited non-zero or was killed by a signal.

    Attributes:
        result: the :class:`~qga_libvirt.operations.run.RunResult`, output included.
    """

    code = ERR_FROM_AGENT

    def __init__(self, message: str, *, result: RunResult, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.result = result


class ThawError(GuestAgentError):
    """Thawing the guest's filesystems failed, retries included: they are STILL FROZEN.

    The message says how to thaw them by hand. Raised ``from`` the last thaw error;
    ``code`` and ``is_unreachable`` are its.

    Attributes:
        attempts: how many thaws were tried.
    """

    def __init__(self, message: str, *, attempts: int, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.attempts = attempts


class FreezeTimeoutError(GuestAgentError):
    """``frozen()``: the body ran longer than the frozen window, so the watchdog thawed
    the filesystems before it ended: what it did after that (a snapshot) may not be
    consistent. Not an :class:`AgentTimeoutError` (``is_unreachable`` is False)."""

    code = ERR_TIMED_OUT
    default_unreachable = False  # the agent answered: the watchdog's thaw worked
