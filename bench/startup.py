"""Start-up: whole processes, as people run them, each against its floor.

Every contender is one process from start to exit, timed from the parent, all in one set
of interleaved batches, each printed against its floor (issue 13's start-up rows), with
bytecode cached as in an installed package:

- ``qga --socket S ping`` against a bare Python script doing the same connect, 0xFF +
  guest-sync-delimited, ping (:func:`bench.harness.bare_socket_ping`, run as a script);
- ``import qga_libvirt``, ``qga --version`` and ``qga --help`` against ``python -c pass``;
- in a full run (it boots a tiny guest), ``qga DOM ping`` and ``qga DOM osinfo`` against
  a bare libvirt-python script doing the same open, lookup and qemuAgentCommand, and
  virsh qemu-agent-command as a peer.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from qga_libvirt.testing import HostAgent

from .harness import (
    QUICK,
    Stats,
    bare_socket_ping,
    interleaved,
    libvirt_guest,
    load,
    report_against,
)

PYTHON = sys.executable
QGA = str(Path(PYTHON).with_name("qga"))
ROOT = Path(__file__).resolve().parent.parent

BARE_SOCKET = f"{inspect.getsource(bare_socket_ping)}\nimport sys\nbare_socket_ping(sys.argv[1])\n"

BARE_LIBVIRT = """
import sys, libvirt, libvirt_qemu
libvirt.registerErrorHandler(lambda *a: None, None)
conn = libvirt.open("qemu:///system")
dom = conn.lookupByName(sys.argv[1])
print(libvirt_qemu.qemuAgentCommand(dom, sys.argv[2], 5, 0))
"""

PASS = "python -c pass"
BARE_SOCKET_NAME = "bare script: connect, resync, ping"
BARE_PING = "bare libvirt-python: ping"
BARE_OSINFO = "bare libvirt-python: osinfo"


# As installed: bytecode cached (pip compiles what it installs). This environment may set
# PYTHONDONTWRITEBYTECODE, which would time compiling every module of the checkout; the
# cache goes to a directory of its own (filled by the warm-up runs), not into the tree.
ENV = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
ENV["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="qga-bench-pycache-")


CPU: dict[str, list[float]] = {}
"""CPU seconds (user + system) of each run of each contender: less noisy than wall time
on a loaded machine."""


def process(name: str, *argv: str) -> Callable[[], object]:
    def run() -> object:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=ENV)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        CPU.setdefault(name, []).append(used)
        return done

    return run


def main() -> dict[str, float]:
    batches = 6 if QUICK else 20
    with HostAgent() as host, contextlib.ExitStack() as stack:
        sock = str(host.socket)
        commands: dict[str, tuple[str, ...]] = {
            PASS: (PYTHON, "-c", "pass"),
            BARE_SOCKET_NAME: (PYTHON, "-c", BARE_SOCKET, sock),
            "qga --socket S ping": (QGA, "--socket", sock, "ping"),
            "python -c 'import qga_libvirt'": (PYTHON, "-c", "import qga_libvirt"),
            "qga --version": (QGA, "--version"),
            "qga --help": (QGA, "--help"),
        }
        floors: dict[str, tuple[str, float | None]] = {
            "qga --socket S ping": (BARE_SOCKET_NAME, 1.5),
            "python -c 'import qga_libvirt'": (PASS, None),
            "qga --version": (PASS, None),
            "qga --help": (PASS, None),
        }
        where = "host qemu-ga socket"
        if not QUICK:
            name = stack.enter_context(libvirt_guest("qga-bench-start", 180))
            ping = '{"execute":"guest-ping"}'
            osinfo = '{"execute":"guest-get-osinfo"}'
            commands |= {
                BARE_PING: (PYTHON, "-c", BARE_LIBVIRT, name, ping),
                BARE_OSINFO: (PYTHON, "-c", BARE_LIBVIRT, name, osinfo),
                "qga DOM ping": (QGA, name, "ping"),
                "qga DOM osinfo": (QGA, name, "osinfo"),
                "virsh qemu-agent-command ping": (
                    *("virsh", "-c", "qemu:///system", "qemu-agent-command"),
                    *(name, ping),
                ),
            }
            floors |= {
                "qga DOM ping": (BARE_PING, 1.3),
                "qga DOM osinfo": (BARE_OSINFO, 2.0),
                BARE_OSINFO: (BARE_PING, None),
                "virsh qemu-agent-command ping": (BARE_PING, None),
            }
            where += " and a tiny guest through libvirt"
        before = load()
        stats = interleaved(
            {name: process(name, *argv) for name, argv in commands.items()}, batches
        )
        ratios = report_against(
            f"whole processes, {where}, {batches} interleaved runs each:",
            stats,
            floors,
            before=before,
        )
        cpu = {name: Stats(tuple(values[1:])) for name, values in CPU.items()}  # no warm-up
        cpu_ratios = report_against("  the same, CPU (user + system) per process:", cpu, floors)
        ratios |= {f"{name} (CPU)": ratio for name, ratio in cpu_ratios.items()}
        return ratios


if __name__ == "__main__":
    main()
