"""The asyncio client over many host agents: AsyncGuestAgent vs a minimal asyncio client
vs the blocking fleet_call.

N qemu-ga processes of the host, each on its own socket (10 and 200; 1,000 in a full
run), and a sweep where 5% of them are replaced by sockets nobody serves. Each
contender opens every target, resyncs, pings, closes:

- the floor: a minimal asyncio client (open_unix_connection, guest-sync-delimited and
  guest-ping written by hand, lines read back), no error types, no retries;
- AsyncGuestAgent, ``asyncio.gather`` over the targets;
- fleet_call with 16 worker threads (the blocking client).

The asyncio contenders keep at most :data:`OPEN` connections at once (the process's
file limit is 1,024 here). Also printed: the Python memory allocated per target during
one AsyncGuestAgent sweep (tracemalloc's peak / N).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import tracemalloc
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from qga_libvirt import AsyncGuestAgent, GuestAgentError, fleet_call
from qga_libvirt.testing import HostAgent

from .harness import QUICK, checked, interleaved, load, report, with_silent

OPEN = 256
WORKERS = 16
TIMEOUT = 5.0
SILENT_TIMEOUT = 0.5
SILENT_SHARE = 0.05


async def _floor_one(path: str, timeout: float, gate: asyncio.Semaphore) -> bool:
    async with gate:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(path)
                try:
                    writer.write(b'\xff{"execute":"guest-sync-delimited","arguments":{"id":7}}\n')
                    while True:  # past the 0xFF sentinel to the sync's answer
                        line = await reader.readline()
                        if json.loads(line.lstrip(b"\xff")).get("return") == 7:
                            break
                    writer.write(b'{"execute":"guest-ping"}\n')
                    return "return" in json.loads(await reader.readline())
                finally:
                    writer.close()
        except (TimeoutError, OSError, ValueError):
            return False


async def _client_one(path: str, timeout: float, gate: asyncio.Semaphore) -> bool:
    async with gate:
        agent = AsyncGuestAgent.from_socket(path, timeout, idle_timeout=None)
        try:
            await agent.ping()
            return True
        except GuestAgentError:
            return False
        finally:
            await agent.aclose()


def _sweep(
    one: Callable[[str, float, asyncio.Semaphore], Coroutine[Any, Any, bool]],
    paths: list[str],
    timeout: float,
) -> Callable[[], int]:
    async def all_of_them() -> int:
        gate = asyncio.Semaphore(OPEN)
        return sum(await asyncio.gather(*(one(path, timeout, gate) for path in paths)))

    return lambda: asyncio.run(all_of_them())


def _fleet(paths: list[str], timeout: float) -> Callable[[], int]:
    def sweep() -> int:
        results = fleet_call(paths, lambda a: a.ping(), max_workers=WORKERS, timeout=timeout)
        return sum(r.ok for r in results)

    return sweep


def _memory_per_target(paths: list[str], timeout: float) -> float:
    tracemalloc.start()
    try:
        _sweep(_client_one, paths, timeout)()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / len(paths)


def main() -> dict[str, float]:
    sizes = [10, 200] if QUICK else [10, 200, 1000]
    rounds = 5 if QUICK else 7
    out: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="qga-aio-")))
        hosts = [stack.enter_context(HostAgent(scratch / f"agent{i}")) for i in range(max(sizes))]
        every = [str(host.socket) for host in hosts]
        for n in sizes:
            paths = every[:n]
            mixed, silent = with_silent(stack, scratch, paths, SILENT_SHARE)
            for label, targets, timeout, answering in (
                (f"ping {n} agents", paths, TIMEOUT, n),
                (f"ping {n} agents, {silent} silent", mixed, SILENT_TIMEOUT, n - silent),
            ):
                contenders = {
                    "minimal asyncio client": _sweep(_floor_one, targets, timeout),
                    "AsyncGuestAgent, gather": _sweep(_client_one, targets, timeout),
                    f"fleet_call, {WORKERS} threads": _fleet(targets, timeout),
                }
                before = load()
                stats = interleaved(
                    {k: checked(v, answering, k) for k, v in contenders.items()}, rounds
                )
                ratios = report(
                    f"{label}: median sweep over {rounds} interleaved rounds",
                    stats,
                    "minimal asyncio client",
                    before=before,
                )
                per = stats["AsyncGuestAgent, gather"].median / n
                print(f"  AsyncGuestAgent per target: {per * 1e3:.3f} ms")
                out[label] = ratios["AsyncGuestAgent, gather"]
            memory = _memory_per_target(paths, TIMEOUT)
            print(f"  Python memory per target, one AsyncGuestAgent sweep of {n}: {memory:.0f} B")
    return out


if __name__ == "__main__":
    main()
