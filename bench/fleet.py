"""Fleets: one query over many host agents, fleet_call vs a plain loop vs a warm pool.

N qemu-ga processes of the host, each on its own socket (10 and 200; 1,000 in a full
run), and a sweep where 5% of them are replaced by sockets nobody serves (agents that
never answer). Every contender does the same per-target work, open the agent, ask,
close it; only the fan-out differs:

- a plain loop, one target after another;
- a warm pool: a ThreadPoolExecutor created once, outside the timing, with as many
  workers as fleet_call uses: the floor for running the targets in parallel;
- fleet_call (which adds ordered results, typed errors per target and a wall-clock
  bound per target).

Sweeps are interleaved; each figure is the median time of a whole sweep. On this
machine kind (2 cores) a local agent answers in well under a millisecond and that time
is CPU on both sides, so parallelism has little to hide; what it hides is waiting:
slow guests, remote hypervisors and, above all, agents that never answer, each of
which costs a whole timeout in a plain loop.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from qga_libvirt import GuestAgent, GuestAgentError, fleet_call
from qga_libvirt.testing import HostAgent

from .harness import QUICK, checked, interleaved, load, report, with_silent

WORKERS = 16
TIMEOUT = 5.0
SILENT_TIMEOUT = 0.5
SILENT_SHARE = 0.05


def _ping(path: str, timeout: float) -> bool:
    with GuestAgent.from_socket(path, timeout, idle_timeout=None) as agent:
        try:
            agent.ping()
        except GuestAgentError:
            return False
        return True


def plain_loop(paths: list[str], timeout: float) -> Callable[[], int]:
    return lambda: sum(_ping(path, timeout) for path in paths)


def warm_pool(pool: ThreadPoolExecutor, paths: list[str], timeout: float) -> Callable[[], int]:
    return lambda: sum(pool.map(lambda path: _ping(path, timeout), paths))


def fleet(paths: list[str], timeout: float) -> Callable[[], int]:
    def sweep() -> int:
        results = fleet_call(paths, lambda a: a.ping(), max_workers=WORKERS, timeout=timeout)
        return sum(r.ok for r in results)

    return sweep


def main() -> dict[str, float]:
    sizes = [10, 200] if QUICK else [10, 200, 1000]
    rounds = 5 if QUICK else 7
    out: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="qga-fleet-")))
        hosts = [stack.enter_context(HostAgent(scratch / f"agent{i}")) for i in range(max(sizes))]
        every = [str(host.socket) for host in hosts]
        pool = stack.enter_context(ThreadPoolExecutor(WORKERS))
        for n in sizes:
            paths = every[:n]
            mixed, silent = with_silent(stack, scratch, paths, SILENT_SHARE)
            for label, targets, timeout, answering in (
                (f"ping {n} agents", paths, TIMEOUT, n),
                (
                    f"ping {n} agents, {silent} silent (timeout {SILENT_TIMEOUT:g} s)",
                    mixed,
                    SILENT_TIMEOUT,
                    n - silent,
                ),
            ):
                if answering != n and n > 200 and QUICK:
                    continue
                contenders = {
                    f"warm pool, {WORKERS} workers": warm_pool(pool, targets, timeout),
                    "plain loop": plain_loop(targets, timeout),
                    f"fleet_call, {WORKERS} workers": fleet(targets, timeout),
                }
                if answering != n:
                    del contenders["plain loop"]  # a whole timeout per silent agent
                before = load()
                stats = interleaved(
                    {k: checked(v, answering, k) for k, v in contenders.items()}, rounds
                )
                ratios = report(
                    f"{label}: median sweep over {rounds} interleaved rounds",
                    stats,
                    f"warm pool, {WORKERS} workers",
                    before=before,
                )
                out[label] = ratios[f"fleet_call, {WORKERS} workers"]
                if "plain loop" in stats:
                    loop = stats["plain loop"].median
                    mine = stats[f"fleet_call, {WORKERS} workers"].median
                    print(f"  fleet_call / plain loop: x{mine / loop:.2f} (target <= 1.0)")
    return out


if __name__ == "__main__":
    main()
