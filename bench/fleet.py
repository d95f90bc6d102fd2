"""Fleets: one query over 200 host agents, in parallel (fleet_call) vs one after another.

200 qemu-ga processes of the host, each on its own socket; in a third sweep, a few of
them are replaced by sockets nobody serves (agents that never answer). The sequential
contender does what a fleet does for each target, in a plain loop: open the agent, ask,
close it. Rounds are interleaved; each figure is the median time of a whole sweep.

On this machine kind (2 cores) a local agent answers in well under a millisecond, and
that time is CPU on both sides: parallelism has little to hide there. What it hides is
waiting: slow guests, remote hypervisors, and above all agents that do not answer,
each of which costs a whole timeout in a plain loop.
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qga_libvirt import GuestAgent, GuestAgentError, fleet_call
from qga_libvirt.testing import HostAgent

AGENTS = 200
SILENT = 4
SILENT_TIMEOUT = 0.5


def one_after_another(paths: list[str], fn: Callable[[GuestAgent], Any], timeout: float) -> int:
    """The plain loop: open, ask, close, next. Returns how many answered."""
    answered = 0
    for path in paths:
        with GuestAgent.from_socket(path, timeout, idle_timeout=None) as agent:
            try:
                fn(agent)
            except GuestAgentError:
                continue
            answered += 1
    return answered


def in_parallel(
    paths: list[str], fn: Callable[[GuestAgent], Any], timeout: float, workers: int
) -> int:
    return sum(r.ok for r in fleet_call(paths, fn, max_workers=workers, timeout=timeout))


def sweep_times(
    paths: list[str], fn: Callable[[GuestAgent], Any], timeout: float, answering: int, rounds: int
) -> dict[str, float]:
    """Median seconds per sweep of each contender, over interleaved rounds."""
    contenders: dict[str, Callable[[], int]] = {
        "one after another": lambda: one_after_another(paths, fn, timeout),
        "fleet_call, 16 workers": lambda: in_parallel(paths, fn, timeout, 16),
        "fleet_call, 64 workers": lambda: in_parallel(paths, fn, timeout, 64),
    }
    times: dict[str, list[float]] = {label: [] for label in contenders}
    for round_ in range(rounds):
        order = list(contenders) if round_ % 2 == 0 else list(reversed(contenders))
        for label in order:
            begin = time.perf_counter()
            assert contenders[label]() == answering, label
            times[label].append(time.perf_counter() - begin)
    return {label: statistics.median(values) for label, values in times.items()}


def main(rounds: int = 5) -> dict[str, float]:
    speedups: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="qga-fleet-")))
        start = time.monotonic()
        hosts = [stack.enter_context(HostAgent(scratch / f"agent{i}")) for i in range(AGENTS)]
        paths = [str(host.socket) for host in hosts]
        started = time.monotonic() - start
        # Agents that never answer (a listening socket nobody serves), among the others.
        silent = []
        for i in range(SILENT):
            server = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
            server.bind(str(scratch / f"silent{i}.sock"))
            server.listen(8)
            silent.append(str(scratch / f"silent{i}.sock"))
        with_silent = paths[: AGENTS - SILENT] + silent
        scenarios: list[tuple[str, list[str], Callable[[GuestAgent], Any], float, int]] = [
            ("ping", paths, lambda agent: agent.ping(), 5.0, AGENTS),
            ("get_osinfo", paths, lambda agent: agent.get_osinfo(), 5.0, AGENTS),
            (
                f"ping, {SILENT} of them silent (timeout {SILENT_TIMEOUT:g} s)",
                with_silent,
                lambda agent: agent.ping(),
                SILENT_TIMEOUT,
                AGENTS - SILENT,
            ),
        ]
        print(
            f"fleet of {AGENTS} host qemu-ga (started in {started:.1f} s), {rounds} "
            f"interleaved rounds, median time per sweep over all {AGENTS}:"
        )
        for name, targets, fn, timeout, answering in scenarios:
            medians = sweep_times(targets, fn, timeout, answering, rounds)
            serial = medians["one after another"]
            print(f"  {name}:")
            for label, seconds in medians.items():
                print(f"    {label:24s} {seconds * 1000:8.1f} ms  speedup {serial / seconds:5.2f}")
            speedups[name] = serial / medians["fleet_call, 16 workers"]
    return speedups


if __name__ == "__main__":
    main()
