"""The VM lab: libvirtd (also on qemu+tcp://127.0.0.1) and tiny guests of every kind."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt

from qga_libvirt import GuestAgent
from qga_libvirt.testing import BACKPORTS_AGENT
from scripts import tinyguest

ROOT = Path(__file__).resolve().parent.parent
LOCAL_URI = "qemu:///system"
TCP_URI = "qemu+tcp://127.0.0.1/system"


@dataclass
class Lab:
    """Names of the domains the session booted, and a connection to their libvirtd."""

    conn: Any
    prefix: str
    ok: str = ""  # libvirt agent channel, agent running
    ok10: str = ""  # the same with qemu-ga 10.0 (the others run the host's 7.2)
    sock: str = ""  # agent on a raw socket added through <qemu:commandline>
    none: str = ""  # no agent channel at all
    never: str = ""  # libvirt channel, agent never started in the guest
    off: str = ""  # defined, shut off
    created: list[str] = field(default_factory=list)
    boot_seconds: float = 0.0

    def name(self, kind: str) -> str:
        return f"{self.prefix}-{kind}"

    def domain(self, name: str) -> Any:
        return self.conn.lookupByName(name)


def libvirtd_up() -> None:
    subprocess.run([str(ROOT / "scripts" / "libvirtd-up.sh")], check=True)


def boot_lab() -> Iterator[Lab]:
    libvirtd_up()
    image = tinyguest.build()
    if not BACKPORTS_AGENT.exists():
        raise RuntimeError(f"{BACKPORTS_AGENT} is missing: run scripts/setup.sh (make setup)")
    image10 = tinyguest.build(agent=BACKPORTS_AGENT)
    conn = libvirt.open(LOCAL_URI)
    lab = Lab(conn=conn, prefix=f"qgat{os.getpid()}")
    kinds: dict[str, tinyguest.AgentMode] = {
        "ok": "libvirt",
        "sock": "socket",
        "none": "none",
        "never": "never-starts",
    }
    try:
        start = time.monotonic()
        for kind, mode in kinds.items():
            name = lab.name(kind)
            tinyguest.destroy(conn, name)
            tinyguest.start(conn, name, image, agent=mode, data_disk=kind == "ok")
            lab.created.append(name)
            setattr(lab, kind, name)
        lab.ok10 = lab.name("ok10")
        tinyguest.destroy(conn, lab.ok10)
        tinyguest.start(conn, lab.ok10, image10, agent="libvirt", data_disk=True, nic=True)
        lab.created.append(lab.ok10)
        lab.off = lab.name("off")
        tinyguest.destroy(conn, lab.off)
        tinyguest.define(conn, lab.off, image, data_disk=False)
        lab.created.append(lab.off)

        def wait(name: str) -> None:
            GuestAgent.from_domain(name, conn).wait_for_agent(180)

        with ThreadPoolExecutor(3) as pool:
            list(pool.map(wait, [lab.ok, lab.sock, lab.ok10]))
        lab.boot_seconds = time.monotonic() - start
        yield lab
    finally:  # in parallel: libvirt gives each qemu a few seconds to end on SIGTERM
        with ThreadPoolExecutor(max(1, len(lab.created))) as pool:
            list(pool.map(lambda name: tinyguest.destroy(conn, name), lab.created))
