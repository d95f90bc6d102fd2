"""A tiny Linux guest under libvirt for tests: boots in about 10 s under TCG, runs qemu-ga.

Tooling of this checkout (the tests, the benchmarks, ``make demo``), not of the wheel:
it needs the build scripts beside it. The guest is the host's Debian kernel plus an
initramfs made by ``scripts/build-tiny-guest.sh`` (busybox-static, the host's
``/usr/sbin/qemu-ga`` and its libraries, virtio and ext4 modules). It mounts its
virtio-blk data disk (``/dev/vda``, a per-domain copy of a 16 MiB ext4 template) at
``/mnt/data`` and starts qemu-ga on the virtio-serial port named
``org.qemu.guest_agent.0``.

Four agent set-ups (``agent=``):

- ``"libvirt"``: the usual libvirt channel; libvirt holds the chardev and speaks to the agent.
- ``"socket"``: no libvirt channel; the port is added with ``<qemu:commandline>`` and its
  chardev is a unix socket server at ``socket_path`` that libvirt does not hold.
- ``"none"``: no agent channel at all.
- ``"never-starts"``: the libvirt channel exists but the guest never starts qemu-ga
  (kernel command line ``qga.agent=off``).

With ``python_disk`` (a path from :func:`build_python_disk`) the guest also gets the
host's Python 3.11 and standard library on a read-only disk shared by every guest,
mounted at ``/opt/python`` with ``/usr/bin/python3`` linked to it: enough for real Ansible
modules, not only ``raw``.

Files: the image lives in ``QGA_GUEST_CACHE`` (default ``/var/cache/qga-libvirt/guest``;
a guest built with another qemu-ga has its own cache beside it, see :func:`build`);
each domain gets a directory ``QGA_GUEST_STATE_DIR/NAME`` (default
``/var/lib/qga-libvirt/domains/NAME``) holding its data disk and, for ``"socket"``, its
socket; the serial console goes to ``/var/log/libvirt/qemu/NAME-console.log`` (kept after
:func:`destroy`, overwritten by the next start). libvirtd must run (see
``scripts/libvirtd-up.sh``); the domains are ``<domain type='qemu'>`` (TCG), as KVM
guests hang on this machine kind.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypedDict, Unpack

import libvirt
import libvirt_qemu

from qga_libvirt.discovery import AGENT_CHANNEL_NAME

__all__ = [
    "DEFAULT_CACHE_DIR",
    "DEFAULT_STATE_DIR",
    "AgentMode",
    "GuestImage",
    "GuestOptions",
    "build",
    "build_python_disk",
    "console_log_path",
    "define",
    "destroy",
    "domain_dir",
    "domain_xml",
    "start",
    "wait_agent_ping",
]

AgentMode = Literal["libvirt", "socket", "none", "never-starts"]

DEFAULT_CACHE_DIR = Path("/var/cache/qga-libvirt/guest")
DEFAULT_STATE_DIR = Path("/var/lib/qga-libvirt/domains")
CONSOLE_LOG_DIR = Path("/var/log/libvirt/qemu")
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
BUILD_SCRIPT = Path(__file__).resolve().with_name("build-tiny-guest.sh")
SYSTEM_AGENT = Path("/usr/sbin/qemu-ga")
"""The qemu-ga a tiny guest runs unless :func:`build` is given another."""
PYTHON_SCRIPT = BUILD_SCRIPT.with_name("build-python-disk.sh")
DEFAULT_PYTHON_CACHE_DIR = Path("/var/cache/qga-libvirt/python")
PYTHON_DISK_SERIAL = "qga-python"
"""The virtio serial by which the guest's init recognises the Python disk."""
QEMU_USER = "libvirt-qemu"
"""The user Debian's libvirt runs QEMU as: it must be able to create the raw socket."""

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_VALID_AGENTS: tuple[AgentMode, ...] = ("libvirt", "socket", "none", "never-starts")


@dataclass(frozen=True)
class GuestImage:
    """The built guest: kernel, initramfs and ext4 data-disk template."""

    kernel: Path
    initrd: Path
    data_template: Path


def build(cache_dir: Path | None = None, agent: Path | None = None) -> GuestImage:
    """Build (or reuse the cached) tiny guest and return its paths.

    ``agent`` is the qemu-ga binary the guest runs: the host's ``/usr/sbin/qemu-ga`` by
    default, or another build that runs with the host's libraries (the 10.0 one
    ``scripts/setup.sh`` fetches: :data:`qga_libvirt.testing.BACKPORTS_AGENT`).
    ``cache_dir`` defaults to ``$QGA_GUEST_CACHE``, then ``/var/cache/qga-libvirt/guest``,
    for the host's agent; for another, to a directory of its own beside that one
    (``guest-<hash of the binary's path>``). Fast (a hash check) when nothing changed.

    Raises:
        FileNotFoundError: the build script is missing.
        RuntimeError: the build script failed (its stderr is in the message), or did
            not produce all three files.
    """
    agent = agent or SYSTEM_AGENT
    if cache_dir is None:
        cache_dir = Path(os.environ.get("QGA_GUEST_CACHE", str(DEFAULT_CACHE_DIR)))
        if agent != SYSTEM_AGENT:
            cache_dir = cache_dir.with_name(_cache_name(agent))
    if not BUILD_SCRIPT.is_file():
        raise FileNotFoundError(f"build script not found: {BUILD_SCRIPT}")
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT), str(cache_dir), str(agent)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{BUILD_SCRIPT.name} failed (exit {proc.returncode}): {proc.stderr.strip()}"
        )
    image = GuestImage(
        kernel=cache_dir / "vmlinuz",
        initrd=cache_dir / "initrd.img",
        data_template=cache_dir / "data.img",
    )
    for path in (image.kernel, image.initrd, image.data_template):
        if not path.is_file():
            raise RuntimeError(f"{BUILD_SCRIPT.name} did not produce {path}")
    return image


def _cache_name(agent: Path) -> str:
    """A cache directory name of its own for a qemu-ga that is not the host's."""
    digest = hashlib.sha256(str(agent.resolve()).encode()).hexdigest()[:12]
    return f"guest-{digest}"


def build_python_disk(cache_dir: Path | None = None) -> Path:
    """Build (or reuse the cached) read-only Python disk and return its path.

    ``cache_dir`` defaults to ``$QGA_PYTHON_CACHE``, then ``/var/cache/qga-libvirt/python``.
    See ``scripts/build-python-disk.sh``.

    Raises:
        FileNotFoundError: the build script is missing.
        RuntimeError: the build script failed (its stderr is in the message).
    """
    if cache_dir is None:
        cache_dir = Path(os.environ.get("QGA_PYTHON_CACHE", str(DEFAULT_PYTHON_CACHE_DIR)))
    if not PYTHON_SCRIPT.is_file():
        raise FileNotFoundError(f"build script not found: {PYTHON_SCRIPT}")
    proc = subprocess.run(
        ["bash", str(PYTHON_SCRIPT), str(cache_dir)], capture_output=True, text=True, check=False
    )
    image = cache_dir / "python.img"
    if proc.returncode != 0 or not image.is_file():
        raise RuntimeError(
            f"{PYTHON_SCRIPT.name} failed (exit {proc.returncode}): {proc.stderr.strip()}"
        )
    return image


def _check_name(name: str) -> None:
    """Raise ValueError unless ``name`` is safe as a domain name and a file name."""
    if not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid tiny guest name {name!r}: use 1-63 of [A-Za-z0-9_.-], "
            "starting with a letter or digit"
        )


def domain_dir(name: str, state_dir: Path | None = None) -> Path:
    """The per-domain directory (data disk, raw agent socket) of domain ``name``.

    ``state_dir`` defaults to ``$QGA_GUEST_STATE_DIR``, then ``/var/lib/qga-libvirt/domains``.

    Raises:
        ValueError: ``name`` is not a valid tiny guest name.
    """
    _check_name(name)
    if state_dir is None:
        state_dir = Path(os.environ.get("QGA_GUEST_STATE_DIR", str(DEFAULT_STATE_DIR)))
    return state_dir / name


def console_log_path(name: str) -> Path:
    """Where the serial console (kernel, init and qemu-ga messages) of ``name`` is logged.

    Raises:
        ValueError: ``name`` is not a valid tiny guest name.
    """
    _check_name(name)
    return CONSOLE_LOG_DIR / f"{name}-console.log"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    elem = ET.SubElement(parent, tag, attrs)
    if text is not None:
        elem.text = text
    return elem


def domain_xml(
    name: str,
    image: GuestImage,
    *,
    agent: AgentMode,
    data_disk: Path | None,
    memory_mib: int = 256,
    socket_path: Path | None = None,
    nic: bool = False,
    extra_cmdline: str = "",
    python_disk: Path | None = None,
) -> str:
    """Return the libvirt XML of a TCG tiny guest named ``name``.

    Direct kernel boot with ``console=ttyS0``; the serial console is logged to
    :func:`console_log_path`. ``data_disk`` (a raw ext4 image, which the domain writes to)
    becomes ``/dev/vda`` and is mounted at ``/mnt/data``. ``nic`` adds a user-mode
    (slirp) virtio NIC, configured by DHCP in the guest. ``extra_cmdline`` is appended to
    the kernel command line. ``python_disk`` (see :func:`build_python_disk`) is attached
    read-only and mounted at ``/opt/python``. See the module docstring for ``agent``;
    ``socket_path`` is
    required for ``agent="socket"`` and must be creatable by the QEMU process.

    Raises:
        ValueError: invalid ``name`` or ``agent``, ``memory_mib`` < 64, or
            ``agent="socket"`` without ``socket_path``.
    """
    _check_name(name)
    if agent not in _VALID_AGENTS:
        raise ValueError(f"agent must be one of {_VALID_AGENTS}, not {agent!r}")
    if memory_mib < 64:
        raise ValueError(f"memory_mib must be at least 64, not {memory_mib}")
    if agent == "socket" and socket_path is None:
        raise ValueError('agent="socket" needs socket_path')

    ET.register_namespace("qemu", QEMU_NS)
    dom = ET.Element("domain", {"type": "qemu"})
    _sub(dom, "name", name)
    _sub(dom, "memory", str(memory_mib), unit="MiB")
    _sub(dom, "vcpu", "1")
    os_elem = _sub(dom, "os")
    _sub(os_elem, "type", "hvm", arch="x86_64", machine="pc")
    _sub(os_elem, "kernel", str(image.kernel))
    _sub(os_elem, "initrd", str(image.initrd))
    cmdline = f"console=ttyS0 quiet qga.hostname={name}"
    if agent == "never-starts":
        cmdline += " qga.agent=off"
    if extra_cmdline:
        cmdline += " " + extra_cmdline
    _sub(os_elem, "cmdline", cmdline)
    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(dom, "clock", offset="utc")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")

    devices = _sub(dom, "devices")
    if data_disk is not None:
        disk = _sub(devices, "disk", type="file", device="disk")
        _sub(disk, "driver", name="qemu", type="raw")
        _sub(disk, "source", file=str(data_disk))
        _sub(disk, "target", dev="vda", bus="virtio")
    if python_disk is not None:
        disk = _sub(devices, "disk", type="file", device="disk")
        _sub(disk, "driver", name="qemu", type="raw")
        _sub(disk, "source", file=str(python_disk))
        _sub(disk, "target", dev="vdb", bus="virtio")
        _sub(disk, "readonly")
        _sub(disk, "serial", PYTHON_DISK_SERIAL)
    if nic:
        iface = _sub(devices, "interface", type="user")
        _sub(iface, "model", type="virtio")
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "log", file=str(console_log_path(name)), append="off")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    if agent in ("libvirt", "never-starts"):
        channel = _sub(devices, "channel", type="unix")
        _sub(channel, "source", mode="bind")
        _sub(channel, "target", type="virtio", name=AGENT_CHANNEL_NAME)
    _sub(devices, "controller", type="usb", model="none")
    _sub(devices, "memballoon", model="none")

    if agent == "socket" and socket_path is not None:
        path = str(socket_path).replace(",", ",,")  # QEMU option syntax
        args = [
            "-chardev",
            f"socket,path={path},server=on,wait=off,id=qga0",
            "-device",
            # Fixed high slot: libvirt numbers its own devices from slot 2 up and QEMU
            # may create this device first.
            "virtio-serial-pci,id=qgaser,bus=pci.0,addr=0x1e",
            "-device",
            f"virtserialport,bus=qgaser.0,chardev=qga0,name={AGENT_CHANNEL_NAME}",
        ]
        cmd = ET.SubElement(dom, f"{{{QEMU_NS}}}commandline")
        for arg in args:
            ET.SubElement(cmd, f"{{{QEMU_NS}}}arg", {"value": arg})

    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode")


def _lookup(conn: libvirt.virConnect, name: str) -> libvirt.virDomain | None:
    """The domain called ``name``, or None (without libvirt printing an error)."""
    for dom in conn.listAllDomains(0):
        if dom.name() == name:
            return dom
    return None


class GuestOptions(TypedDict, total=False):
    """How :func:`start` and :func:`define` make a tiny guest; every key is optional.

    Keys (default):
        agent ("libvirt"): see the module docstring.
        data_disk (True): a fresh copy of the data template in :func:`domain_dir`,
            mounted at ``/mnt/data``.
        memory_mib (256): at least 64.
        socket_path (``domain_dir(name)/qga.sock``): the raw socket, for ``agent="socket"``.
        nic (False): a user-mode (slirp) virtio NIC, configured by DHCP.
        extra_cmdline (""): appended to the kernel command line.
        state_dir (``$QGA_GUEST_STATE_DIR``, then ``/var/lib/qga-libvirt/domains``).
        python_disk (None): a path from :func:`build_python_disk`.
    """

    agent: AgentMode
    data_disk: bool
    memory_mib: int
    socket_path: Path | None
    nic: bool
    extra_cmdline: str
    state_dir: Path | None
    python_disk: Path | None


def _prepare(
    conn: libvirt.virConnect, name: str, image: GuestImage | None, options: GuestOptions
) -> tuple[Path, str]:
    """Make a fresh per-domain dir (with a data-disk copy); return it and the XML."""
    ddir = domain_dir(name, options.get("state_dir"))
    if _lookup(conn, name) is not None:
        raise FileExistsError(f"domain {name!r} already exists: destroy() it first")
    if image is None:
        image = build()
    shutil.rmtree(ddir, ignore_errors=True)
    ddir.mkdir(parents=True, mode=0o755)
    try:
        # QEMU runs as libvirt-qemu and must create the raw socket in this dir.
        qemu_user = pwd.getpwnam(QEMU_USER)
        os.chown(ddir, qemu_user.pw_uid, qemu_user.pw_gid)
    except KeyError:
        pass
    disk: Path | None = None
    if options.get("data_disk", True):
        disk = ddir / "data.img"
        subprocess.run(
            ["cp", "--sparse=always", str(image.data_template), str(disk)],
            check=True,
            capture_output=True,
        )
    agent = options.get("agent", "libvirt")
    socket_path = options.get("socket_path")
    if agent == "socket" and socket_path is None:
        socket_path = ddir / "qga.sock"
    xml = domain_xml(
        name,
        image,
        agent=agent,
        data_disk=disk,
        memory_mib=options.get("memory_mib", 256),
        socket_path=socket_path,
        nic=options.get("nic", False),
        extra_cmdline=options.get("extra_cmdline", ""),
        python_disk=options.get("python_disk"),
    )
    return ddir, xml


def _submit(ddir: Path, create: Callable[[], libvirt.virDomain]) -> libvirt.virDomain:
    """Hand the domain to libvirt; if it refuses, remove the per-domain dir again."""
    try:
        return create()
    except BaseException:
        shutil.rmtree(ddir, ignore_errors=True)
        raise


def start(
    conn: libvirt.virConnect,
    name: str,
    image: GuestImage | None = None,
    **options: Unpack[GuestOptions],
) -> libvirt.virDomain:
    """Create and start a TRANSIENT tiny guest ``name`` (``conn.createXML``).

    ``image`` defaults to :func:`build()`; ``options``: see :class:`GuestOptions`.
    Returns as soon as QEMU runs: the guest boots for about 10 s more (see
    :func:`wait_agent_ping`).

    Raises:
        ValueError: invalid arguments (see :func:`domain_xml`).
        FileExistsError: a domain with that name already exists.
        RuntimeError, FileNotFoundError: building the image failed (see :func:`build`).
        subprocess.CalledProcessError: copying the data disk failed.
        libvirt.libvirtError: libvirt refused the domain or QEMU failed to start
            (the per-domain dir is removed again).
    """
    ddir, xml = _prepare(conn, name, image, options)
    return _submit(ddir, lambda: conn.createXML(xml, 0))


def define(
    conn: libvirt.virConnect,
    name: str,
    image: GuestImage | None = None,
    **options: Unpack[GuestOptions],
) -> libvirt.virDomain:
    """Define a PERSISTENT tiny guest ``name`` and leave it shut off (``conn.defineXML``).

    Same arguments as :func:`start`; ``dom.create()`` boots it later.

    Raises:
        The same as :func:`start`.
    """
    ddir, xml = _prepare(conn, name, image, options)
    return _submit(ddir, lambda: conn.defineXML(xml))


def destroy(conn: libvirt.virConnect, name: str, *, state_dir: Path | None = None) -> None:
    """Stop (hard) and undefine domain ``name`` if it exists, and remove its domain dir.

    A missing domain is not an error, so this is safe in test teardown. The console log
    is kept.

    Raises:
        ValueError: ``name`` is not a valid tiny guest name.
        libvirt.libvirtError: libvirt failed to destroy or undefine the domain (other
            than "no such domain").
    """
    ddir = domain_dir(name, state_dir)
    dom = _lookup(conn, name)
    if dom is not None:
        try:
            persistent = dom.isPersistent()  # a transient domain vanishes on destroy()
            if dom.isActive():
                dom.destroy()
            if persistent:
                dom.undefine()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
    shutil.rmtree(ddir, ignore_errors=True)


def wait_agent_ping(dom: libvirt.virDomain, timeout: float = 60.0) -> float:
    """Send ``guest-ping`` through libvirt until the agent answers; return seconds waited.

    Only for domains with the libvirt channel (``agent="libvirt"``). Pings only once the
    live XML shows the channel ``state='connected'``, so that libvirt (whose default error
    handler prints every error) says little while the guest boots.

    Raises:
        TimeoutError: no answer within ``timeout`` seconds (the last libvirt error is
            in the message).
        RuntimeError: the domain is no longer running.
        libvirt.libvirtError: the domain disappeared (transient and destroyed).
    """
    t0 = time.monotonic()
    deadline = t0 + timeout
    last = "agent channel never connected"
    while True:
        if not dom.isActive():
            raise RuntimeError(f"domain {dom.name()} is not running: {last}")
        if "state='connected'" in dom.XMLDesc(0):
            try:
                libvirt_qemu.qemuAgentCommand(dom, '{"execute":"guest-ping"}', 2, 0)
                return time.monotonic() - t0
            except libvirt.libvirtError as exc:
                last = str(exc)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no guest-ping reply from {dom.name()} in {timeout} s: {last}")
        time.sleep(0.1)
