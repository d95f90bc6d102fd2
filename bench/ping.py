"""Ping round trip: the library vs a minimal hand-written socket client, same agent.

Both run in one process against one host qemu-ga, in interleaved batches, so machine
noise hits both alike; the figure is the ratio of the medians of batch means.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

from qga_libvirt import GuestAgent
from qga_libvirt.testing import HostAgent

from .harness import QUICK, Stats, load, report


def minimal_client(path: Path) -> tuple[Callable[[], object], Callable[[], None]]:
    """The floor: one persistent connection, write a line, read a line, parse it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    sock.settimeout(5)

    def ping() -> object:
        sock.sendall(b'{"execute":"guest-ping"}\n')
        data = b""
        while not data.endswith(b"\n"):
            data += sock.recv(65536)
        return json.loads(data)

    return ping, sock.close


def main(batches: int = 0, per_batch: int = 250) -> float:
    batches = batches or (10 if QUICK else 40)
    before = load()
    with HostAgent() as host:
        path = host.socket
        # The agent serves one client at a time: each contender's batch runs on a fresh
        # connection of its own, the other's given back. Warm-up calls are not timed.
        results: dict[str, list[float]] = {"minimal": [], "library": []}
        for _ in range(batches):
            ping, close = minimal_client(path)
            for _ in range(50):
                ping()
            start = time.perf_counter()
            for _ in range(per_batch):
                ping()
            results["minimal"].append((time.perf_counter() - start) / per_batch)
            close()
            agent = GuestAgent.from_socket(path, idle_timeout=None)
            for _ in range(50):
                agent.ping()
            start = time.perf_counter()
            for _ in range(per_batch):
                agent.ping()
            results["library"].append((time.perf_counter() - start) / per_batch)
            agent.close()
    ratios = report(
        f"ping round trip, host qemu-ga, {batches} interleaved batches of {per_batch}:",
        {name: Stats(tuple(values)) for name, values in results.items()},
        "minimal",
        unit="us",
        scale=1e6,
        target=1.3,
        before=before,
    )
    return ratios["library"]


if __name__ == "__main__":
    main()
