"""libvirt domains: connections, lookup by name/UUID/ID, and the agent channel in the XML.

The live domain XML tells whether a domain has a guest agent channel and its state::

    <channel type='unix'>
      <source mode='bind' path='/var/lib/libvirt/qemu/channel/target/domain-1-vm/org...'/>
      <target type='virtio' name='org.qemu.guest_agent.0' state='connected'/>
    </channel>

libvirt holds such a channel itself (talk to it through libvirt). A channel added behind
libvirt's back, through ``<qemu:commandline>`` (``-chardev socket,path=...`` plus a
``virtserialport`` named ``org.qemu.guest_agent.0``), is a raw socket anyone on the host
can open: the socket backend talks to it directly.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
import uuid as uuidlib
from typing import Any, Final, Literal

import libvirt
from lxml import etree
from pydantic import BaseModel, ConfigDict

from . import quiet
from .errors import DomainNotFoundError, Hint, LibvirtConnectionError, LibvirtError, Remedy
from .quiet import quiet_libvirt_errors

__all__ = [
    "AGENT_CHANNEL_NAME",
    "AgentChannel",
    "DomainInfo",
    "agent_channel_from_xml",
    "default_uri",
    "describe_domain",
    "list_domains",
    "lookup_domain",
    "open_connection",
    "quiet_libvirt_errors",
    "start_event_loop",
]

AGENT_CHANNEL_NAME: Final = "org.qemu.guest_agent.0"
_QEMU_NS: Final = "http://libvirt.org/schemas/domain/qemu/1.0"

_STATES: Final = {
    libvirt.VIR_DOMAIN_NOSTATE: "no state",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting down",
    libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class AgentChannel(_Frozen):
    """The guest agent channel of a domain, as its live XML describes it.

    Attributes:
        state: ``"connected"`` (a process in the guest opened the port; not proof that it
            answers) or ``"disconnected"``, as libvirt reports; None where libvirt does not
            know (a channel it does not hold, or a domain that is not running).
        socket_path: the host-side unix socket, when there is one.
        target_name: the port name, ``org.qemu.guest_agent.0``.
        held_by_libvirt: True for a ``<channel>`` libvirt manages (use the libvirt
            backend); False for one added through ``<qemu:commandline>`` (raw socket).
    """

    state: Literal["connected", "disconnected"] | None
    socket_path: str | None
    target_name: str = AGENT_CHANNEL_NAME
    held_by_libvirt: bool = True


class DomainInfo(_Frozen):
    """One domain: identity, state and its agent channel (None when it has none)."""

    name: str
    uuid: str
    id: int | None
    state: str
    agent_channel: AgentChannel | None
    uri: str

    @property
    def running(self) -> bool:
        return self.state == "running"


def default_uri() -> str:
    """The URI virsh would use: ``$LIBVIRT_DEFAULT_URI``, else ``qemu:///system``."""
    return os.environ.get("LIBVIRT_DEFAULT_URI") or "qemu:///system"


_connections_lock = threading.Lock()
_event_loop: threading.Thread | None = None


def start_event_loop() -> None:
    """Run libvirt's default event loop in a daemon thread, once per process.

    With it, connections opened AFTERWARDS deliver domain events, and
    :meth:`GuestAgent.wait_for_agent <qga_libvirt.GuestAgent.wait_for_agent>` wakes on the
    agent's lifecycle event instead of polling. Call it early, before any connection is
    opened, and not when the application runs its own libvirt event loop.
    """
    global _event_loop
    with _connections_lock:
        if _event_loop is not None:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        _event_loop = threading.Thread(target=run, name="libvirt events", daemon=True)
        _event_loop.start()


_connections: dict[str, Any] = {}


def open_connection(uri: str | None = None, *, shared: bool = True) -> Any:
    """A libvirt connection to ``uri`` (default like virsh, see :func:`default_uri`).

    With ``shared`` (the default) one connection per URI is kept for the process and
    reused, so looking domains up costs no new handshake.

    Raises:
        LibvirtConnectionError: libvirtd is not reachable at the URI.
    """
    uri = uri or default_uri()
    with _connections_lock:
        conn = _connections.get(uri) if shared else None
        if conn is not None and conn.isAlive():
            return conn
        if quiet.wanted():
            libvirt.registerErrorHandler(quiet.silence, None)
        try:
            conn = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            raise LibvirtConnectionError(
                f"cannot connect to libvirt at {uri}: {exc.get_error_message()}; is libvirtd "
                "running there, and may this user use it (root, or the libvirt group)?",
                target=uri,
            ) from exc
        if shared:
            _connections[uri] = conn
        return conn


def _is_uuid(text: str) -> bool:
    try:
        uuidlib.UUID(text)
    except ValueError:
        return False
    return True


def lookup_domain(conn: Any, domain: str | int) -> Any:
    """Find a domain by name, UUID or numeric ID, like virsh does.

    A connection that died since it was opened (libvirtd restarted) is reopened, on the
    same URI, and the lookup made once more: it changes nothing, so it may run twice.

    Raises:
        DomainNotFoundError: no domain matches; the message names what was asked for.
        LibvirtConnectionError: libvirtd is not answering at the connection's URI.
    """
    try:
        return _lookup(conn, domain)
    except libvirt.libvirtError as exc:
        if _alive(conn):
            raise _lookup_failed(domain, exc) from exc
    fresh = open_connection(conn.getURI())  # replaces a dead shared connection
    try:
        return _lookup(fresh, domain)
    except libvirt.libvirtError as exc:
        raise _lookup_failed(domain, exc) from exc


def _alive(conn: Any) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def _lookup_failed(domain: str | int, exc: Any) -> LibvirtError:
    return LibvirtError(
        f"looking up domain '{domain}' failed: {exc.get_error_message()}",
        libvirt_code=exc.get_error_code(),
        target=f"domain '{domain}'",
    )


def _lookup(conn: Any, domain: str | int) -> Any:
    """Raises DomainNotFoundError, or the libvirtError of any other failure."""
    text = str(domain)
    attempts: list[Any] = []
    if isinstance(domain, int) or text.isdigit():
        attempts.append(lambda: conn.lookupByID(int(text)))
    if _is_uuid(text):
        attempts.append(lambda: conn.lookupByUUIDString(text))
    attempts.append(lambda: conn.lookupByName(text))
    last: libvirt.libvirtError | None = None
    for attempt in attempts:
        try:
            return attempt()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
            last = exc
    uri = conn.getURI()
    raise DomainNotFoundError(
        f"domain '{text}' not found on {uri}",
        target=f"domain '{text}'",
        hint=Hint(
            Remedy.CHECK_DOMAIN,
            "check the name with list_domains() (or `virsh list --all`), or pass uri= for "
            "another hypervisor",
            {"uri": uri},
        ),
    ) from last


def agent_channel_from_xml(xml: str | bytes) -> AgentChannel | None:
    """The agent channel described by a domain's XML, or None when it has none."""
    root = etree.fromstring(xml.encode() if isinstance(xml, str) else xml)
    for channel in root.iterfind("devices/channel"):
        target = channel.find("target")
        if target is None or target.get("name") != AGENT_CHANNEL_NAME:
            continue
        source = channel.find("source")
        state = target.get("state")
        return AgentChannel(
            state=state if state in ("connected", "disconnected") else None,  # type: ignore[arg-type]
            socket_path=source.get("path") if source is not None else None,
        )
    return _channel_from_commandline(root)


def _channel_from_commandline(root: Any) -> AgentChannel | None:
    args = [
        arg.get("value", "")
        for arg in root.iterfind(f"{{{_QEMU_NS}}}commandline/{{{_QEMU_NS}}}arg")
    ]
    chardevs: dict[str, str] = {}
    port_chardev: str | None = None
    for flag, value in itertools.pairwise(args):
        options = _qemu_options(value)
        if flag == "-chardev" and "path" in options and "id" in options:
            chardevs[options["id"]] = options["path"]
        elif flag == "-device" and options.get("name") == AGENT_CHANNEL_NAME:
            port_chardev = options.get("chardev")
    if port_chardev is None or port_chardev not in chardevs:
        return None
    return AgentChannel(state=None, socket_path=chardevs[port_chardev], held_by_libvirt=False)


def _qemu_options(value: str) -> dict[str, str]:
    """``socket,path=/x,server=on,id=a`` -> {"path": "/x", "server": "on", "id": "a"}."""
    options = {}
    for part in re.split(r"(?<!,),(?!,)", value):
        key, sep, val = part.partition("=")
        if sep:
            options[key] = val.replace(",,", ",")
    return options


def describe_domain(dom: Any) -> DomainInfo:
    """Name, UUID, ID, state and agent channel of an open ``virDomain``.

    Raises:
        LibvirtError: libvirt failed to answer (e.g. the domain vanished meanwhile).
    """
    try:
        state_code = dom.state()[0]
        xml = dom.XMLDesc(0)
        ident = dom.ID()
        return DomainInfo(
            name=dom.name(),
            uuid=dom.UUIDString(),
            id=ident if ident >= 0 else None,
            state=_STATES.get(state_code, f"state {state_code}"),
            agent_channel=agent_channel_from_xml(xml),
            uri=dom.connect().getURI(),
        )
    except libvirt.libvirtError as exc:
        raise LibvirtError(
            f"reading domain {dom.name()!r} failed: {exc.get_error_message()}",
            libvirt_code=exc.get_error_code(),
            target=f"domain '{dom.name()}'",
        ) from exc


def list_domains(uri: str | Any | None = None) -> list[DomainInfo]:
    """Every domain on a hypervisor (running or not), sorted by name, with its channel.

    ``uri`` is a libvirt URI (default like virsh) or an open ``virConnect``.

    Raises:
        LibvirtConnectionError: libvirt is not reachable at the URI.
        LibvirtError: libvirt failed to list them.
    """
    conn = uri if isinstance(uri, libvirt.virConnect) else open_connection(uri)
    try:
        domains = conn.listAllDomains(0)
    except libvirt.libvirtError as exc:
        if _alive(conn):
            raise _listing_failed(conn, exc) from exc
        conn = open_connection(conn.getURI())  # libvirtd restarted: reopen, list again
        try:
            domains = conn.listAllDomains(0)
        except libvirt.libvirtError as again:
            raise _listing_failed(conn, again) from again
    infos = []
    for dom in domains:
        try:
            infos.append(describe_domain(dom))
        except LibvirtError:
            continue  # it went away while we looked
    return sorted(infos, key=lambda info: info.name)


def _listing_failed(conn: Any, exc: Any) -> LibvirtError:
    return LibvirtError(
        f"listing the domains on {conn.getURI()} failed: {exc.get_error_message()}",
        libvirt_code=exc.get_error_code(),
        target=conn.getURI(),
    )
