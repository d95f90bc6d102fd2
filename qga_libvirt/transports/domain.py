"""The transport for a libvirt domain's agent: which backend reaches it, and opening it.

This sits above the backends (it builds a :class:`~.libvirt.LibvirtTransport` or a
:class:`~.socket.SocketTransport`) and is what :meth:`GuestAgent.from_domain
<qga_libvirt.GuestAgent.from_domain>` calls.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

import libvirt

from ..discovery import AgentChannel, DomainInfo, describe_domain, lookup_domain, open_connection
from ..errors import (
    AgentNotConfiguredError,
    AgentUnreachableError,
    DomainNotRunningError,
    Hint,
    Remedy,
)
from .libvirt import LibvirtTransport, not_configured, start_hint
from .socket import DEFAULT_IDLE_TIMEOUT, SocketTransport

__all__ = ["Backend", "open_domain_transport"]


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
            f"domain '{name}' is {info.state}: {start_hint(name, info.state)}",
            target=f"domain '{name}'",
        )
    channel = info.agent_channel
    if channel is None:
        raise AgentNotConfiguredError(not_configured(name), target=f"domain '{name}'")
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
