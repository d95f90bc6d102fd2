"""The libvirt backend: ``libvirt_qemu.qemuAgentCommand`` on a domain, local or remote.

libvirt owns the agent channel, serialises commands per domain and resynchronises with
its own ``guest-sync``. What it does not do, this transport does:

- every ``libvirtError`` becomes a typed error naming the domain and saying what to do;
  an agent error, which libvirt flattens into "unable to execute QEMU agent command 'x':
  DESC", is handed back as the agent's class and desc (the class recovered from DESC);
- requests above :data:`MAX_REQUEST_BYTES` are refused before they are sent: a larger one
  leaves libvirt's agent connection unusable until the domain restarts (measured);
- ``guest-sync-delimited`` is sent as ``guest-sync``: its 0xFF sentinel makes libvirt
  close the agent for good, and libvirt already resynchronises.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import threading
from collections.abc import Iterator
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import libvirt
import libvirt_qemu

from ..discovery import (
    AgentChannel,
    DomainInfo,
    describe_domain,
    lookup_domain,
    open_connection,
)
from ..errors import (
    AgentNotConfiguredError,
    AgentNotConnectedError,
    AgentUnreachableError,
    AgentUnresponsiveError,
    DomainNotFoundError,
    DomainNotRunningError,
    GuestAgentError,
    Hint,
    LibvirtError,
    ProtocolError,
    Remedy,
    ReplyTooLargeError,
    RequestTooLargeError,
)
from ..protocol import Reply, encode_request
from .base import Request
from .socket import DEFAULT_IDLE_TIMEOUT, SocketTransport

__all__ = [
    "MAX_REPLY_BYTES",
    "MAX_REQUEST_BYTES",
    "Backend",
    "LibvirtTransport",
    "open_domain_transport",
]

MAX_REQUEST_BYTES: Final = 64 * 1024
"""The largest request libvirt passes safely (256 KiB hung and broke the channel)."""
MAX_REPLY_BYTES: Final = 3 * 1024 * 1024
"""Replies above ~4 MiB fail to encode in libvirt's RPC; a 2 MiB file read (2.7 MiB of
base64) works, 3 MiB does not (measured)."""

_AGENT_FAILED = re.compile(r"unable to execute QEMU agent command '([^']*)'(?:: (.*))?", re.S)
_VIR_ERR_AGENT_COMMAND_TIMEOUT: Final = getattr(libvirt, "VIR_ERR_AGENT_COMMAND_TIMEOUT", 112)
_VIR_ERR_AGENT_COMMAND_FAILED: Final = getattr(libvirt, "VIR_ERR_AGENT_COMMAND_FAILED", 113)


class LibvirtTransport:
    """Talk to a domain's agent through libvirt.

    Args:
        domain: an open ``libvirt.virDomain``.
    """

    def __init__(self, domain: Any) -> None:
        self.domain = domain
        self.name: str = domain.name()
        self._target = f"domain '{self.name}'"

    @property
    def target(self) -> str:
        return self._target

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
        text = encode_request(command, arguments).decode()
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
        seconds = max(1, math.ceil(timeout))
        try:
            out = libvirt_qemu.qemuAgentCommand(self.domain, text, seconds, 0)
        except libvirt.libvirtError as exc:
            if not request.replies and "disappeared while executing" in str(exc):
                # guest-shutdown/suspend send no reply: libvirt saw the agent go away
                # mid-command because the guest went down, which is their success.
                return Reply(value=None)
            return self._failed(exc, request.command, timeout)
        except (SystemError, UnicodeDecodeError) as exc:  # a reply libvirt-python cannot decode
            raise ProtocolError(
                f"libvirt could not decode the reply to {request.command} from {self._target}",
                target=self._target,
                command=request.command,
            ) from exc
        try:
            message = json.loads(out)
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

    def _failed(self, exc: Any, command: str, timeout: float) -> Reply:
        """An agent error comes back as a Reply; anything else is raised, typed."""
        code = exc.get_error_code()
        text = exc.get_error_message() or str(exc)
        failed = _AGENT_FAILED.search(text)
        if failed and code in (libvirt.VIR_ERR_INTERNAL_ERROR, _VIR_ERR_AGENT_COMMAND_FAILED):
            desc = failed.group(2) or "unknown error"
            return Reply(error_class=_recover_class(desc), desc=desc)
        raise self.map_error(exc, command=command, timeout=timeout) from exc

    def map_error(
        self, exc: Any, *, command: str | None = None, timeout: float | None = None
    ) -> GuestAgentError:
        """The typed error for a ``libvirtError`` met while talking to this domain."""
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
                f"{where} is not running: start it first (virsh start {name})", **kwargs
            )
        if code == libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED and "not configured" in text:
            return AgentNotConfiguredError(_not_configured(name), **kwargs)
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
            else:
                waited = f" within {timeout:g} s" if timeout is not None else ""
                hint = (
                    f"no answer{waited}: the agent may be busy, hung, or still starting; "
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

    def close(self) -> None:
        """Nothing to release: the libvirt connection is shared (see discovery)."""


def _recover_class(desc: str) -> str:
    """The agent's error class, which libvirt drops, guessed back from its desc."""
    if "has not been found" in desc or "has been disabled" in desc:
        return "CommandNotFound"
    return "GenericError"


def _not_configured(name: str) -> str:
    return (
        f"domain '{name}' has no guest agent channel: add <channel type='unix'><target "
        f"type='virtio' name='org.qemu.guest_agent.0'/></channel> to its <devices> "
        f"(virsh edit {name}) and restart it"
    )


def _not_connected(name: str) -> str:
    return (
        f"the guest agent of domain '{name}' is not connected: qemu-guest-agent is not "
        "running in the guest (install and start it), or the guest is still booting"
    )


_WAIT: Final = Hint(Remedy.WAIT_FOR_AGENT, "GuestAgent.wait_for_agent() waits for it")


def _use_backend(backend: Backend) -> Hint:
    return Hint(Remedy.USE_BACKEND, f"use backend={backend!r} (or 'auto')", {"backend": backend})


Backend = Literal["auto", "libvirt", "socket"]


def open_domain_transport(
    domain: str | int | Any,
    uri: str | Any | None = None,
    *,
    backend: Backend = "auto",
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
) -> LibvirtTransport | SocketTransport:
    """The transport for a domain found by name, UUID, ID (or an open ``virDomain``).

    Checks the live XML first, to fail fast and clearly. ``backend="auto"`` uses libvirt
    for a channel libvirt holds and the raw socket for one added through
    ``<qemu:commandline>``.

    Raises:
        LibvirtConnectionError, DomainNotFoundError, DomainNotRunningError,
        AgentNotConfiguredError: as their names say; each message names the domain and
            says what to do. (A channel no agent has opened yet is not refused: calls
            raise AgentNotConnectedError until it does, see wait_for_agent.)
        AgentUnreachableError: ``backend="socket"`` where the socket cannot be used.
    """
    if isinstance(domain, libvirt.virDomain):
        dom = domain
    else:
        conn = uri if isinstance(uri, libvirt.virConnect) else open_connection(uri)
        dom = lookup_domain(conn, domain)
    info = describe_domain(dom)
    name = info.name
    if not info.running:
        raise DomainNotRunningError(
            f"domain '{name}' is {info.state}: start it first (virsh start {name})",
            target=f"domain '{name}'",
        )
    channel = info.agent_channel
    if channel is None:
        raise AgentNotConfiguredError(_not_configured(name), target=f"domain '{name}'")
    if backend == "auto":
        backend = "libvirt" if channel.held_by_libvirt else "socket"
    if backend == "socket":
        return _socket_transport(info, channel, idle_timeout)
    if backend != "libvirt":
        raise ValueError(f"backend must be 'auto', 'libvirt' or 'socket', not {backend!r}")
    if not channel.held_by_libvirt:
        raise AgentNotConfiguredError(
            f"domain '{name}' has its agent on a raw socket ({channel.socket_path}) that "
            "libvirt does not manage",
            target=f"domain '{name}'",
            hint=_use_backend("socket"),
        )
    # A disconnected channel is not refused here: the guest may be booting, and libvirt
    # answers "not connected" at once (AgentNotConnectedError) until its agent starts.
    return LibvirtTransport(dom)


def _socket_transport(
    info: DomainInfo, channel: AgentChannel, idle_timeout: float | None
) -> SocketTransport:
    where = f"domain '{info.name}'"
    if channel.held_by_libvirt:
        raise AgentUnreachableError(
            f"the agent channel of {where} is held by libvirt, which is its only client",
            target=where,
            hint=_use_backend("libvirt"),
        )
    if not _is_local(info.uri) or channel.socket_path is None:
        raise AgentUnreachableError(
            f"the agent socket of {where}, {channel.socket_path}, is on the hypervisor's "
            "host, not "
            f"this one ({info.uri}): run there, or give the domain a libvirt <channel>",
            target=where,
        )
    return SocketTransport(
        channel.socket_path,
        idle_timeout=idle_timeout,
        target=f"{where} (socket {channel.socket_path})",
    )


def _is_local(uri: str) -> bool:
    parsed = urlsplit(uri)
    return not parsed.hostname and parsed.scheme.partition("+")[2] in ("", "unix")
