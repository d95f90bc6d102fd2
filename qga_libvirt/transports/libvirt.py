"""The libvirt backend: ``libvirt_qemu.qemuAgentCommand`` on a domain, local or remote.

libvirt owns the agent channel, serialises commands per domain and resynchronises with
its own ``guest-sync``. What it does not do, this transport does:

- every ``libvirtError`` becomes a typed error naming the domain and saying what to do;
  an agent error, which libvirt flattens into "unable to execute QEMU agent command 'x':
  DESC", is handed back as the agent's class and desc (the class recovered from DESC);
- requests above :data:`MAX_REQUEST_BYTES` are refused before they are sent: a larger one
  leaves libvirt's agent connection unusable until the domain restarts (measured);
- ``guest-sync-delimited`` is sent as ``guest-sync``: its 0xFF sentinel makes libvirt
  close the agent for good, and libvirt already resynchronises;
- libvirtd restarting (an upgrade) kills every open connection for good. A call that
  meets a dead connection reopens it (same URI), finds the domain again by UUID and, when
  nothing can have run twice, runs again once: when the request cannot have reached the
  daemon, or the command is repeatable (it changes nothing, see :func:`repeatable`).
  Otherwise it raises ConnectionLostError, saying the command may or may not have run.
  To keep that case rare, a command that is not repeatable is preceded by a cheap probe
  of the connection. While libvirtd is down, calls raise LibvirtConnectionError.

libvirt's own bound. Before the first command, and after any timeout, libvirt sends its
own ``guest-sync`` and waits up to 5 s for it, whatever timeout the call asked for (the
domain's agent timeout, ``virsh guest-agent-timeout DOMAIN --timeout N``, lowers that
bound for every client of the domain; this library does not change it behind the
administrator's back). So a call to a hung agent through libvirt can take up to
``max(timeout, 5 s)``; the error then says which of the two gave up.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import threading
import time
from collections.abc import Iterator
from typing import Any, Final

import libvirt
import libvirt_qemu

from ..commands import Commands, by_wire_name
from ..discovery import AGENT_CHANNEL_NAME, describe_domain, open_connection
from ..errors import (
    AgentNotConfiguredError,
    AgentNotConnectedError,
    AgentTimeoutError,
    AgentUnresponsiveError,
    ConnectionLostError,
    DomainNotFoundError,
    DomainNotRunningError,
    GuestAgentError,
    Hint,
    LibvirtConnectionError,
    LibvirtError,
    ProtocolError,
    Remedy,
    ReplyTooLargeError,
    RequestTooLargeError,
)
from ..protocol import Reply, encode_request
from .base import Features, Identity, Request

__all__ = [
    "MAX_REPLY_BYTES",
    "MAX_REQUEST_BYTES",
    "LibvirtTransport",
    "repeatable",
]

MAX_REQUEST_BYTES: Final = 64 * 1024
"""The largest request libvirt passes safely (256 KiB hung and broke the channel)."""
MAX_REPLY_BYTES: Final = 3 * 1024 * 1024
"""Replies above ~4 MiB fail to encode in libvirt's RPC; a 2 MiB file read (2.7 MiB of
base64) works, 3 MiB does not (measured)."""

_AGENT_FAILED = re.compile(r"unable to execute QEMU agent command '([^']*)'(?:: (.*))?", re.S)
_VIR_ERR_AGENT_COMMAND_TIMEOUT: Final = getattr(libvirt, "VIR_ERR_AGENT_COMMAND_TIMEOUT", 112)
_VIR_ERR_AGENT_COMMAND_FAILED: Final = getattr(libvirt, "VIR_ERR_AGENT_COMMAND_FAILED", 113)
LIBVIRT_SYNC_SECONDS: Final = 5
"""How long libvirt waits for its own guest-sync, whatever the call's timeout (measured:
timeout 1 -> 5.0 s against a hung agent; lowered only by the domain's agent timeout)."""
# The request cannot have reached libvirtd: the connection was known closed, or the write
# failed. (An "End of file while reading" may come after the daemon got the request.)
_NEVER_SENT: Final = ("client socket is closed", "Cannot write data")
# Arguments that name the agent's own handles: reading or closing one twice is not the
# same as once (the next chunk; a process status the agent forgot after reporting it).
_HANDLE_ARGUMENTS: Final = frozenset({"handle", "pid"})


def repeatable(request: Request) -> bool:
    """Whether running ``request`` twice is the same as running it once.

    True for a declared command that changes nothing in the guest (its ``changes_guest``
    fact) and touches none of the agent's own handles (file handles, exec pids).
    """
    declared = by_wire_name(request.command)
    if declared is None or declared.facts.changes_guest:
        return False
    return not (request.arguments and _HANDLE_ARGUMENTS & request.arguments.keys())


class _ConnectionDiedError(Exception):
    """The libvirt connection died under a call (libvirtd exited or restarted)."""

    def __init__(self, cause: Any, *, sent: bool) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.sent = sent


class LibvirtTransport:
    """Talk to a domain's agent through libvirt.

    Args:
        domain: an open ``libvirt.virDomain``. Its connection's URI and the domain's
            UUID are kept, to find it again after libvirtd restarts.
    """

    def __init__(self, domain: Any) -> None:
        self.domain = domain
        self.name: str = domain.name()
        self.uuid: str = domain.UUIDString()
        self.uri: str = domain.connect().getURI()
        self._target = f"domain '{self.name}'"
        self._calls = threading.Lock()  # one call at a time, as libvirt runs them

    @property
    def target(self) -> str:
        return self._target

    @property
    def features(self) -> Features:
        """Power through libvirt's typed API, agent lifecycle events, the domain's URI
        and UUID."""
        return Features(
            power=self, agent_events=self, identity=Identity(uri=self.uri, domain_uuid=self.uuid)
        )

    @property
    def max_request_bytes(self) -> int | None:
        return MAX_REQUEST_BYTES

    @property
    def max_reply_bytes(self) -> int | None:
        return MAX_REPLY_BYTES

    def execute(self, request: Request, timeout: float) -> Reply:
        command, arguments = request.command, request.arguments
        if command == "guest-sync-delimited":
            command = "guest-sync"
        try:
            text = encode_request(command, arguments).decode()
        except GuestAgentError as exc:
            exc.target, exc.command = self._target, request.command
            raise
        if len(text) > MAX_REQUEST_BYTES:
            raise RequestTooLargeError(
                f"{request.command} request to {self._target} is {len(text)} bytes; libvirt "
                f"breaks the agent channel above {MAX_REQUEST_BYTES} bytes, so it was not sent",
                hint=Hint(
                    Remedy.SMALLER_WRITES,
                    "write in smaller chunks (write_file/upload do) or use the socket backend",
                ),
                target=self._target,
                command=request.command,
            )
        deadline = time.monotonic() + timeout
        # libvirt runs one agent command per domain at a time, and a call queued inside
        # libvirtd waits without regard to its timeout: queue here, against the deadline.
        if not self._calls.acquire(timeout=max(timeout, 0)):
            raise AgentTimeoutError(
                f"{request.command} to {self._target} waited {timeout:g} s for other calls "
                "to this domain's agent to finish (libvirt runs one at a time), so it was "
                "not sent",
                target=self._target,
                command=request.command,
            )
        try:
            return self._execute(request, text, timeout, deadline)
        finally:
            self._calls.release()

    def _execute(self, request: Request, text: str, timeout: float, deadline: float) -> Reply:
        again = repeatable(request)
        domain = self.domain if again else self._probed(request.command, deadline)
        try:
            return self._once(domain, request, text, deadline - time.monotonic(), timeout)
        except _ConnectionDiedError as died:
            uncertain = died.sent and not again
            domain = self._reopen(request.command, died.cause, deadline, uncertain=uncertain)
            if uncertain:
                raise ConnectionLostError(
                    f"libvirtd at {self.uri} went away while {request.command} was running "
                    f"on {self._target}: it may or may not have run in the guest. The "
                    "connection is open again: check the guest's state before retrying",
                    target=self._target,
                    command=request.command,
                ) from died.cause
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AgentTimeoutError(
                f"libvirtd at {self.uri} restarted during {request.command}; the connection "
                f"to {self._target} is open again, but the {timeout:g} s timeout passed "
                "before the command could be sent again: retry it",
                target=self._target,
                command=request.command,
            ) from None
        try:  # once more, on the new connection: nothing can have run twice
            return self._once(domain, request, text, remaining, timeout)
        except _ConnectionDiedError as died:
            raise ConnectionLostError(
                f"libvirtd at {self.uri} went away again while {request.command} was sent "
                f"to {self._target}, right after the connection was reopened: "
                f"{died.cause.get_error_message()}",
                target=self._target,
                command=request.command,
            ) from died.cause

    def _once(
        self, domain: Any, request: Request, text: str, remaining: float, timeout: float
    ) -> Reply:
        """One qemuAgentCommand given ``remaining`` seconds (libvirt counts in whole
        seconds, at least 1; ``timeout`` is what the caller asked, for messages); a dead
        connection raises _ConnectionDiedError."""
        seconds = max(1, math.ceil(remaining))
        started = time.monotonic()
        try:
            out = libvirt_qemu.qemuAgentCommand(domain, text, seconds, 0)
        except libvirt.libvirtError as exc:
            if _dead(domain):
                message = exc.get_error_message() or ""
                raise _ConnectionDiedError(exc, sent=not message.startswith(_NEVER_SENT)) from exc
            if not request.replies and "disappeared while executing" in str(exc):
                # guest-shutdown/suspend send no reply: libvirt saw the agent go away
                # mid-command because the guest went down, which is their success.
                return Reply(value=None)
            return self._failed(exc, request.command, timeout, time.monotonic() - started, seconds)
        except (SystemError, UnicodeDecodeError) as exc:  # a reply libvirt-python cannot decode
            raise ProtocolError(
                f"libvirt could not decode the reply to {request.command} from {self._target}",
                target=self._target,
                command=request.command,
            ) from exc
        try:
            message = json.loads(out)
        except RecursionError:
            raise ProtocolError(
                f"the reply to {request.command} from {self._target} is nested too deeply "
                "to decode",
                reply=out[:1024],
                target=self._target,
                command=request.command,
            ) from None  # a traceback thousands of frames deep says nothing more
        except (TypeError, ValueError) as exc:
            raise ProtocolError(
                f"the reply to {request.command} from {self._target} is not JSON",
                reply=out,
                target=self._target,
                command=request.command,
            ) from exc
        try:
            return Reply.from_message(message)
        except GuestAgentError as exc:
            exc.target, exc.command = self._target, request.command
            raise

    def _probed(self, command: str, deadline: float) -> Any:
        """The domain, on a connection just seen alive: before a command that must not
        run twice, so that a libvirtd restarted since the last call is found before the
        command is sent rather than after. Costs one small RPC."""
        domain = self.domain
        try:
            domain.connect().getLibVersion()
        except libvirt.libvirtError as exc:
            if not _dead(domain):
                raise self.map_error(exc, command=command) from exc
            domain = self._reopen(command, exc, deadline, uncertain=False)
        return domain

    def _reopen(self, command: str, cause: Any, deadline: float, *, uncertain: bool) -> Any:
        """A new connection to the same URI, and the domain in it found by UUID.

        libvirtd takes a moment to restart: connecting is retried, with a backoff, until
        the call's deadline.

        Raises:
            LibvirtConnectionError: libvirtd did not answer at the URI by the deadline.
            DomainNotFoundError: the domain is gone from the new connection.
        """
        delay = 0.05
        while True:
            try:
                conn = open_connection(self.uri)  # the shared one, if another reopened it
                break
            except LibvirtConnectionError as exc:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    fate = "it may or may not have run in the guest" if uncertain else "not sent"
                    raise LibvirtConnectionError(
                        f"libvirtd is not answering at {self.uri} (it stopped or is "
                        f"restarting), so {command} could not reach {self._target} "
                        f"({fate}): calls work again once it is back [{exc.message}]",
                        target=self._target,
                        command=command,
                    ) from cause
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 1.0)
        try:
            self.domain = conn.lookupByUUIDString(self.uuid)
        except libvirt.libvirtError as exc:
            raise self.map_error(exc, command=command) from exc
        return self.domain

    def _failed(
        self, exc: Any, command: str, timeout: float, waited: float, allowed: float
    ) -> Reply:
        """An agent error comes back as a Reply; anything else is raised, typed."""
        code = exc.get_error_code()
        text = exc.get_error_message() or str(exc)
        failed = _AGENT_FAILED.search(text)
        if failed and code in (libvirt.VIR_ERR_INTERNAL_ERROR, _VIR_ERR_AGENT_COMMAND_FAILED):
            desc = failed.group(2) or "unknown error"
            return Reply(error_class=_recover_class(desc), desc=desc)
        raise self.map_error(
            exc, command=command, timeout=timeout, waited=waited, allowed=allowed
        ) from exc

    def map_error(
        self,
        exc: Any,
        *,
        command: str | None = None,
        timeout: float | None = None,
        waited: float | None = None,
        allowed: float | None = None,
    ) -> GuestAgentError:
        """The typed error for a ``libvirtError`` met while talking to this domain.

        ``waited``: how long libvirt took, out of the ``allowed`` seconds it was given
        (default ``timeout``), to tell libvirt's own sync giving up (its fixed bound)
        from the command's timeout.
        """
        code = exc.get_error_code()
        text = exc.get_error_message() or str(exc)
        name, where = self.name, self._target
        kwargs: dict[str, Any] = {"target": where, "command": command}
        if code == libvirt.VIR_ERR_NO_DOMAIN:
            return DomainNotFoundError(
                f"{where} no longer exists: it was undefined or, if transient, destroyed",
                **kwargs,
            )
        if code == libvirt.VIR_ERR_OPERATION_INVALID and "not running" in text:
            return DomainNotRunningError(
                f"{where} is not running: {start_hint(name, self._state())}", **kwargs
            )
        if "disappeared while executing" in text:
            return ConnectionLostError(
                f"the guest agent of {where} went away while running {command or 'the command'}"
                " (the agent restarted, or the guest rebooted or shut down): it may or may "
                f"not have run; the next call waits for the agent again [{text}]",
                **kwargs,
            )
        if code == libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED and "not configured" in text:
            return AgentNotConfiguredError(not_configured(name), **kwargs)
        if code == libvirt.VIR_ERR_AGENT_UNRESPONSIVE and "not connected" in text:
            return AgentNotConnectedError(_not_connected(name), hint=_WAIT, **kwargs)
        if code in (
            libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
            libvirt.VIR_ERR_AGENT_UNSYNCED,
            _VIR_ERR_AGENT_COMMAND_TIMEOUT,
        ):
            if "due to an error" in text:
                hint = (
                    "libvirt closed its agent connection after an error; it reopens it when "
                    "the agent restarts in the guest, or when the domain restarts"
                )
            elif waited is not None and waited < (allowed or timeout or 0) - 0.5:
                # Our timeout had not passed: libvirt's own guest-sync gave up first.
                hint = (
                    f"no answer to libvirt's own guest-sync within {waited:.0f} s, which "
                    f"libvirt waits for at most {LIBVIRT_SYNC_SECONDS} s whatever the timeout "
                    "asked (nothing was sent): the agent is busy, hung, or restarting; a "
                    "longer timeout cannot help, restart qemu-guest-agent in the guest if "
                    "it persists"
                )
            else:
                within = f" within {timeout:g} s" if timeout is not None else ""
                hint = (
                    f"no answer{within}: the agent may be busy, hung, or still starting; "
                    "retry with a longer timeout, or restart qemu-guest-agent in the guest"
                )
            return AgentUnresponsiveError(f"the guest agent of {where}: {hint} [{text}]", **kwargs)
        if "encode message payload" in text:
            return ReplyTooLargeError(
                f"the reply to {command or 'the command'} from {where} is larger than "
                f"libvirt's RPC message limit (about 4 MiB), so libvirt dropped it: ask for "
                "less (smaller file reads; exec output to a file) or use the socket backend "
                f"[{text}]",
                **kwargs,
            )
        return LibvirtError(f"libvirt failed on {where}: {text}", libvirt_code=code, **kwargs)

    @contextlib.contextmanager
    def agent_connected_events(self) -> Iterator[threading.Event | None]:
        """An event set whenever libvirt reports this domain's agent connected.

        Yields None where the connection cannot deliver events (no libvirt event loop
        runs in this process: see :func:`qga_libvirt.discovery.start_event_loop`).
        """
        event = threading.Event()

        def on_lifecycle(_c: Any, _d: Any, state: int, _reason: int, _o: Any) -> None:
            if state == libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_CONNECTED:
                event.set()

        conn = self.domain.connect()
        try:
            callback = conn.domainEventRegisterAny(
                self.domain, libvirt.VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE, on_lifecycle, None
            )
        except libvirt.libvirtError:
            yield None
            return
        try:
            yield event
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                conn.domainEventDeregisterAny(callback)

    def reboot(self) -> None:
        """``virDomainReboot`` with the ``GUEST_AGENT`` flag: returns once the guest reset."""
        try:
            self.domain.reboot(libvirt.VIR_DOMAIN_REBOOT_GUEST_AGENT)
        except libvirt.libvirtError as exc:
            raise self.map_error(exc, command=Commands.shutdown.wire) from exc

    def poweroff(self) -> None:
        """``virDomainShutdownFlags`` with the ``GUEST_AGENT`` flag: returns once QEMU saw
        the guest power off."""
        try:
            self.domain.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT)
        except libvirt.libvirtError as exc:
            raise self.map_error(exc, command=Commands.shutdown.wire) from exc

    def running(self) -> bool:
        """Whether the domain runs; a transient domain that stopped no longer exists."""
        try:
            return bool(self.domain.isActive())
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return False
            raise self.map_error(exc) from exc

    def _state(self) -> str | None:
        try:
            state: str | None = describe_domain(self.domain).state
        except GuestAgentError:
            state = None
        return state

    def close(self) -> None:
        """Nothing to release: the libvirt connection is shared (see discovery)."""


def _dead(domain: Any) -> bool:
    """Whether the domain's connection is dead (known only after an RPC failed on it)."""
    try:
        return not domain.connect().isAlive()
    except libvirt.libvirtError:
        return True


def start_hint(name: str, state: str | None) -> str:
    """What to do about a domain that is not running (shared with the domain factory)."""
    if state == "paused":
        return f"it is paused: resume it (virsh resume {name})"
    if state == "pmsuspended":
        return f"it is suspended by the guest: wake it (virsh dompmwakeup {name})"
    return f"start it first (virsh start {name})"


def _recover_class(desc: str) -> str:
    """The agent's error class, which libvirt drops, guessed back from its desc."""
    if "has not been found" in desc or "has been disabled" in desc:
        return "CommandNotFound"
    return "GenericError"


def not_configured(name: str) -> str:
    """What to do about a domain without an agent channel (shared with the factory)."""
    return (
        f"domain '{name}' has no guest agent channel: add <channel type='unix'><target "
        f"type='virtio' name='{AGENT_CHANNEL_NAME}'/></channel> to its <devices> "
        f"(virsh edit {name}) and restart it"
    )


def _not_connected(name: str) -> str:
    return (
        f"the guest agent of domain '{name}' is not connected: qemu-guest-agent is not "
        "running in the guest (install and start it), or the guest is still booting"
    )


_WAIT: Final = Hint(Remedy.WAIT_FOR_AGENT, "GuestAgent.wait_for_agent() waits for it")
