"""run(["/bin/true"]): the library vs a tight-polling hand-written client, same agent.

The floor is the least a client can do: guest-exec, then guest-exec-status in a tight
loop (no sleep at all) until the process exited. The library polls with a backoff
(first after 1 ms) so that long commands cost few calls; this measures what that costs
on the quickest command there is. Both run in one process against one host qemu-ga,
in interleaved batches; the figures are medians of single runs.
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

TARGET_MS = 3.0


def tight_poll_client(path: Path) -> tuple[Callable[[], int], Callable[[], None]]:
    """The floor: one persistent connection, exec, then status until exited, no sleeping."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    sock.settimeout(5)
    pending = b""

    def call(request: bytes) -> dict[str, object]:
        nonlocal pending
        sock.sendall(request)
        while b"\n" not in pending:
            pending += sock.recv(65536)
        line, _, pending = pending.partition(b"\n")
        reply = json.loads(line)
        assert isinstance(reply, dict)
        return reply

    def run_true() -> int:
        started = call(b'{"execute":"guest-exec","arguments":{"path":"/bin/true"}}\n')
        pid = started["return"]["pid"]  # type: ignore[index]
        status = json.dumps({"execute": "guest-exec-status", "arguments": {"pid": pid}})
        request = status.encode() + b"\n"
        while True:
            reply = call(request)["return"]
            if reply["exited"]:  # type: ignore[index]
                return int(reply["exitcode"])  # type: ignore[index]

    return run_true, sock.close


def library_client(path: Path) -> tuple[Callable[[], int], Callable[[], None]]:
    agent = GuestAgent.from_socket(path, idle_timeout=None)

    def run_true() -> int:
        result = agent.run(["/bin/true"])
        assert result.exitcode is not None
        return result.exitcode

    return run_true, agent.close


def main(batches: int = 0, per_batch: int = 25) -> float:
    batches = batches or (6 if QUICK else 20)
    before = load()
    contenders = {"tight poll": tight_poll_client, "qga_libvirt": library_client}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    with HostAgent() as host:
        # The agent serves one client at a time: each contender's batch runs on a fresh
        # connection of its own, the other's given back. Warm-up runs are not timed.
        for _ in range(batches):
            for name, make in contenders.items():
                run_true, close = make(host.socket)
                for _ in range(3):
                    assert run_true() == 0
                for _ in range(per_batch):
                    start = time.perf_counter()
                    assert run_true() == 0
                    times[name].append(time.perf_counter() - start)
                close()
    stats = {name: Stats(tuple(values)) for name, values in times.items()}
    report(
        f'run(["/bin/true"]), host qemu-ga, {batches} interleaved batches of {per_batch}:',
        stats,
        "tight poll",
        before=before,
    )
    library = stats["qga_libvirt"].median * 1e3
    print(f"  qga_libvirt.run median {library:.2f} ms (target <= {TARGET_MS:g} ms)")
    return library


if __name__ == "__main__":
    main()
