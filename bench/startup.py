"""Start-up: whole processes, as people run them, against bare Python scripts.

Every contender is one process from start to exit, timed from the parent, in
interleaved batches: `python -c pass` (the interpreter's floor), a bare script that
does what `qga --socket S ping` does (connect, 0xFF + guest-sync-delimited, ping), the
`qga` command itself, `qga --version`, and `import qga_libvirt`. In a full run it also
boots a tiny guest and compares `qga DOM ping` / `qga DOM osinfo` with a bare
libvirt-python script (open, lookup, qemuAgentCommand) and with virsh.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from qga_libvirt.testing import HostAgent

from .harness import QUICK, interleaved, load, report

PYTHON = sys.executable
QGA = str(Path(PYTHON).with_name("qga"))
ROOT = Path(__file__).resolve().parent.parent

BARE_SOCKET = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(b'\\xff{"execute":"guest-sync-delimited","arguments":{"id":4242}}\\n'
          b'{"execute":"guest-ping","id":7}\\n')
data = b""
while b'"id": 7' not in data and b'"id":7' not in data:
    data += s.recv(65536)
s.close()
"""

BARE_LIBVIRT = """
import sys, libvirt, libvirt_qemu
libvirt.registerErrorHandler(lambda *a: None, None)
conn = libvirt.open("qemu:///system")
dom = conn.lookupByName(sys.argv[1])
print(libvirt_qemu.qemuAgentCommand(dom, sys.argv[2], 5, 0))
"""


def process(*argv: str) -> Callable[[], object]:
    def run() -> object:
        return subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)

    return run


def main() -> dict[str, float]:
    batches = 6 if QUICK else 20
    ratios: dict[str, float] = {}
    with HostAgent() as host:
        sock = str(host.socket)
        before = load()
        stats = interleaved(
            {
                "python -c pass": process(PYTHON, "-c", "pass"),
                "bare script: connect, resync, ping": process(PYTHON, "-c", BARE_SOCKET, sock),
                "qga --socket S ping": process(QGA, "--socket", sock, "ping"),
                "qga --version": process(QGA, "--version"),
                "python -c 'import qga_libvirt'": process(PYTHON, "-c", "import qga_libvirt"),
            },
            batches,
        )
        ratios = report(
            f"whole processes, host qemu-ga socket, {batches} interleaved runs each:",
            stats,
            "bare script: connect, resync, ping",
            before=before,
        )
    if not QUICK:
        ratios.update(_libvirt(batches))
    return ratios


def _libvirt(batches: int) -> dict[str, float]:
    from qga_libvirt import GuestAgent
    from qga_libvirt.discovery import open_connection
    from scripts import tinyguest

    subprocess.run([str(ROOT / "scripts" / "libvirtd-up.sh")], check=True)
    conn = open_connection("qemu:///system")
    name = f"qga-bench-start-{os.getpid()}"
    tinyguest.start(conn, name, agent="libvirt", data_disk=False)
    try:
        GuestAgent.from_domain(name, conn).wait_for_agent(180)
        ping = '{"execute":"guest-ping"}'
        osinfo = '{"execute":"guest-get-osinfo"}'
        before = load()
        stats = interleaved(
            {
                "bare libvirt-python: ping": process(PYTHON, "-c", BARE_LIBVIRT, name, ping),
                "bare libvirt-python: osinfo": process(PYTHON, "-c", BARE_LIBVIRT, name, osinfo),
                "qga DOM ping": process(QGA, name, "ping"),
                "qga DOM osinfo": process(QGA, name, "osinfo"),
                "virsh qemu-agent-command": process("virsh", "qemu-agent-command", name, ping),
            },
            batches,
        )
        return report(
            f"whole processes, libvirt domain, {batches} interleaved runs each:",
            stats,
            "bare libvirt-python: ping",
            before=before,
        )
    finally:
        tinyguest.destroy(conn, name)


if __name__ == "__main__":
    main()
