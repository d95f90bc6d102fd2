"""A connection's whole life, and what an idle agent object costs.

- connect + ping + close, one agent object per call: with the default ``idle_timeout``
  (the connection is given back when idle), with ``idle_timeout=None`` (kept until
  close), and the floor (a bare socket: connect, 0xFF + guest-sync-delimited, ping,
  close). Interleaved batches against one host qemu-ga.
- Memory per unconnected ``GuestAgent.from_socket`` object (200 of them), as Python
  allocations (tracemalloc) and as resident memory.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from qga_libvirt import GuestAgent
from qga_libvirt.testing import HostAgent

from .harness import QUICK, bare_socket_ping, interleaved, load, report

OBJECTS = 200


def bare(path: str) -> Callable[[], object]:
    return lambda: bare_socket_ping(path)


def library(path: str, idle: float | None) -> Callable[[], object]:
    def once() -> object:
        with GuestAgent.from_socket(path, idle_timeout=idle) as agent:
            return agent.ping()

    return once


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def memory_per_object(path: str) -> tuple[float, float]:
    """(Python-allocated bytes, resident bytes) per unconnected agent object."""
    gc.collect()
    rss = _rss_kib()
    tracemalloc.start()
    objects = [GuestAgent.from_socket(path) for _ in range(OBJECTS)]
    allocated, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    grown = (_rss_kib() - rss) * 1024
    del objects
    return allocated / OBJECTS, grown / OBJECTS


def main() -> dict[str, float]:
    batches, per_batch = (8, 20) if QUICK else (30, 50)
    with HostAgent() as host:
        path = str(host.socket)
        before = load()
        stats = interleaved(
            {
                "floor: bare connect, resync, ping, close": bare(path),
                "idle_timeout=None": library(path, None),
                "default idle_timeout": library(path, 2.0),
            },
            batches,
            per_batch,
            warmup=5,
        )
        ratios = report(
            f"connect + ping + close, host qemu-ga, {batches} batches of {per_batch}:",
            stats,
            "floor: bare connect, resync, ping, close",
            unit="us",
            scale=1e6,
            before=before,
        )
        idle = stats["default idle_timeout"].median / stats["idle_timeout=None"].median
        print(f"  default idle_timeout / idle_timeout=None: x{idle:.2f} (target <= 1.3)")
        allocated, resident = memory_per_object(path)
        print(
            f"memory per unconnected from_socket object ({OBJECTS}): "
            f"{allocated / 1024:.1f} KiB allocated, {resident / 1024:.1f} KiB resident "
            "(target < 16 KiB)"
        )
    ratios["idle/none"] = idle
    ratios["bytes per object"] = allocated
    return ratios


if __name__ == "__main__":
    main()
