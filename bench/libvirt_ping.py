"""Ping through libvirt: the library's backend vs a bare libvirt-python loop vs virsh.

Boots its own tiny guest (destroyed at the end). The library and the bare loop run in
interleaved batches in one process, on one shared libvirt connection; virsh is timed
per call (a process each time), as people use it from scripts.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable

import libvirt
import libvirt_qemu

from qga_libvirt import GuestAgent
from qga_libvirt.discovery import open_connection
from scripts import tinyguest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed_batches(
    contenders: dict[str, Callable[[], object]], batches: int, per_batch: int
) -> dict[str, float]:
    """Median over batches of the mean seconds per call, contenders interleaved."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(batches):
        for name, call in contenders.items():
            start = time.perf_counter()
            for _ in range(per_batch):
                call()
            samples[name].append((time.perf_counter() - start) / per_batch)
    return {name: statistics.median(values) for name, values in samples.items()}


def main(batches: int = 20, per_batch: int = 50) -> float:
    subprocess.run([os.path.join(ROOT, "scripts", "libvirtd-up.sh")], check=True)
    conn = open_connection("qemu:///system")
    name = f"qga-bench-{os.getpid()}"
    tinyguest.start(conn, name, agent="libvirt", data_disk=False)
    try:
        agent = GuestAgent.from_domain(name, conn)
        agent.wait_for_agent(180)
        dom = conn.lookupByName(name)

        def bare() -> object:
            return libvirt_qemu.qemuAgentCommand(dom, '{"execute":"guest-ping"}', 5, 0)

        for _ in range(20):
            agent.ping()
            bare()
        medians = timed_batches({"bare": bare, "library": agent.ping}, batches, per_batch)
        virsh = []
        for _ in range(10):
            start = time.perf_counter()
            subprocess.run(
                [
                    "virsh",
                    "-c",
                    "qemu:///system",
                    "qemu-agent-command",
                    name,
                    '{"execute":"guest-ping"}',
                ],
                check=True,
                capture_output=True,
            )
            virsh.append(time.perf_counter() - start)
    finally:
        tinyguest.destroy(conn, name)
    bare_us, lib_us = medians["bare"] * 1e6, medians["library"] * 1e6
    virsh_us = statistics.median(virsh) * 1e6
    ratio = lib_us / bare_us
    print(
        f"ping through libvirt to a TCG tiny guest, {batches} interleaved batches of {per_batch}:"
    )
    print(f"  bare qemuAgentCommand   {bare_us:9.0f} us median")
    print(f"  qga_libvirt             {lib_us:9.0f} us median")
    print(f"  virsh qemu-agent-command{virsh_us:9.0f} us median per call (a process each)")
    print(
        f"  ratio library/bare = {ratio:.3f}  (target <= 1.1); virsh/library = "
        f"{virsh_us / lib_us:.1f}x"
    )
    return ratio


if __name__ == "__main__":
    libvirt.registerErrorHandler(lambda _c, _e: None, None)
    main()
