"""Benchmarks, each against a minimal baseline side by side: ``python -m bench [NAME...]``.

``python -m bench --help`` lists them and runs nothing. ``--quick`` runs fewer batches
(the whole set in a few minutes); the figures quoted in the docs come from full runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from typing import Final

BENCHMARKS: Final = {
    "startup": "whole `qga` processes and `import qga_libvirt` vs bare Python scripts",
    "connect": "connect + ping + close per idle_timeout; memory per idle agent object",
    "ping": "socket ping round trip vs a minimal client",
    "libvirt_ping": "ping through libvirt vs bare qemuAgentCommand and virsh (boots a guest)",
    "run": "run() vs bare exec + tight status poll: socket, and libvirt (boots a guest)",
    "fleet": "fleet_call vs a plain loop and a warm thread pool, 10 to 1,000 host agents",
    "aio": "AsyncGuestAgent vs a minimal asyncio client and fleet_call, 10 to 1,000 agents",
    "files": "file transfer throughput and memory vs a bare loop (socket and libvirt)",
    "upload_cpu": "client CPU per uploaded MiB vs requests built by hand",
    "ansible": "one playbook via qga.libvirt.agent vs community.libvirt's libvirt_qemu (a guest)",
    "soak": "faults injected under mixed calls on both backends (boots two guests; minutes)",
}
QUICK_SET: Final = ("startup", "connect", "ping", "run", "upload_cpu", "fleet")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        epilog="benchmarks:\n"
        + "\n".join(f"  {name:13s} {what}" for name, what in BENCHMARKS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (all)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"fewer batches; without NAME runs {', '.join(QUICK_SET)}",
    )
    options = parser.parse_args(argv)
    unknown = [name for name in options.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"no benchmark {', '.join(unknown)}; see --help")
    if options.quick:
        os.environ["QGA_BENCH_QUICK"] = "1"
    names = options.names or list(QUICK_SET if options.quick else BENCHMARKS)
    for name in names:
        start = time.monotonic()
        importlib.import_module(f"bench.{name}").main()
        print(f"  ({name}: {time.monotonic() - start:.0f} s)\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
