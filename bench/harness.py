"""What every benchmark shares: interleaved A/B batches, medians, ratios, the load average.

This machine is shared and noisy: a single absolute time means little. So contenders run
in interleaved batches (the order alternating), each batch's mean is one sample, and a
benchmark reports, per contender, the median sample with its min-max, the ratio of its
median to the baseline's, and the load average before and after.
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "QUICK",
    "Stats",
    "bare_socket_ping",
    "checked",
    "interleaved",
    "libvirt_guest",
    "load",
    "report",
    "report_against",
    "with_silent",
]

QUICK = os.environ.get("QGA_BENCH_QUICK") == "1"
"""Set by ``python -m bench --quick``: fewer batches, same contenders."""


@dataclass(frozen=True)
class Stats:
    """The samples of one contender (seconds per call, or any unit the caller chose)."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)


def bare_socket_ping(path: str) -> bytes:
    """The floor of a ping over a socket: connect, 0xFF + guest-sync-delimited and
    guest-ping sent together, read up to the ping's reply, close.

    Self-contained (its own imports), so that ``bench.startup`` runs its source as a
    whole process and ``bench.connect`` calls it in a loop: one floor for both.
    """
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.sendall(
            b'\xff{"execute":"guest-sync-delimited","arguments":{"id":4242}}\n'
            b'{"execute":"guest-ping","id":7}\n'
        )
        data = b""
        while b'"id": 7' not in data and b'"id":7' not in data:
            data += s.recv(65536)
        s.shutdown(socket.SHUT_RDWR)
    return data


def load() -> str:
    """The 1/5/15-minute load average, for the report."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def interleaved(
    contenders: Mapping[str, Callable[[], object]],
    batches: int,
    per_batch: int = 1,
    *,
    warmup: int = 1,
) -> dict[str, Stats]:
    """Seconds per call of each contender: ``batches`` samples of ``per_batch`` calls.

    Batches alternate the order of the contenders, so a drift in the machine's load
    hits them alike. ``warmup`` calls of each are made first and not timed.
    """
    names = list(contenders)
    for name in names:
        for _ in range(warmup):
            contenders[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for batch in range(batches):
        for name in names if batch % 2 == 0 else reversed(names):
            call = contenders[name]
            start = time.perf_counter()
            for _ in range(per_batch):
                call()
            samples[name].append((time.perf_counter() - start) / per_batch)
    return {name: Stats(tuple(values)) for name, values in samples.items()}


def report(
    title: str,
    stats: Mapping[str, Stats],
    baseline: str,
    *,
    unit: str = "ms",
    scale: float = 1e3,
    target: float | None = None,
    before: str = "",
) -> dict[str, float]:
    """Print medians, min-max and ratios to ``baseline``; returns the ratios."""
    print(f"{title}  [{before + ' -> ' if before else ''}{load()}]")
    base = stats[baseline].median
    ratios = {}
    for name, stat in stats.items():
        ratios[name] = stat.median / base
        print(
            f"  {name:40s} {stat.median * scale:10.3f} {unit}  "
            f"[{stat.low * scale:.3f}-{stat.high * scale:.3f}]  x{ratios[name]:.2f}"
        )
    if target is not None:
        worst = max(ratio for name, ratio in ratios.items() if name != baseline)
        verdict = "ok" if worst <= target else "OVER"
        print(f"  worst ratio to {baseline!r}: {worst:.2f} (target <= {target:g}: {verdict})")
    return ratios


def report_against(
    title: str,
    stats: Mapping[str, Stats],
    floors: Mapping[str, tuple[str, float | None]],
    *,
    before: str = "",
) -> dict[str, float]:
    """Print every contender against its own floor: ``floors`` maps a contender to
    (its floor, its target ratio or None); floors are printed as they are. Returns the
    ratios of the contenders that have a floor."""
    print(f"{title}  [{before + ' -> ' if before else ''}{load()}]")
    width = max(map(len, stats))
    ratios = {}
    for name, stat in stats.items():
        line = (
            f"  {name:{width}s} {stat.median * 1e3:8.1f} ms  "
            f"[{stat.low * 1e3:.1f}-{stat.high * 1e3:.1f}]"
        )
        if name in floors:
            floor, target = floors[name]
            ratios[name] = ratio = stat.median / stats[floor].median
            line += f"  x{ratio:.2f} of {floor!r}"
            if target is not None:
                line += f" (target <= {target:g}: {'ok' if ratio <= target else 'OVER'})"
        print(line)
    return ratios


def checked(sweep: Callable[[], int], answering: int, label: str) -> Callable[[], int]:
    """``sweep`` (it returns how many targets answered), asserting that many answer."""

    def run() -> int:
        got = sweep()
        assert got == answering, f"{label}: {got} of {answering} answered"
        return got

    return run


def with_silent(
    stack: contextlib.ExitStack, scratch: Path, paths: list[str], share: float
) -> tuple[list[str], int]:
    """``paths`` with ``share`` of them (at least one) replaced by sockets nobody serves,
    spread among the others as they would be in a real fleet; and how many."""
    n = len(paths)
    silent = max(1, round(n * share))
    mixed = list(paths)
    step = n // silent
    for i in range(silent):
        path = str(scratch / f"silent{n}-{i}.sock")
        server = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        server.bind(path)
        server.listen(1024)
        mixed[i * step] = path
    return mixed, silent


@contextlib.contextmanager
def libvirt_guest(prefix: str, wait: float = 240) -> Iterator[str]:
    """A running tiny guest whose agent answers through libvirt: ``$QGA_BENCH_DOMAIN``,
    or one booted for the benchmark (and destroyed after it)."""
    given = os.environ.get("QGA_BENCH_DOMAIN")
    if given:
        yield given
        return
    from qga_libvirt import GuestAgent
    from qga_libvirt.discovery import open_connection
    from scripts import tinyguest

    root = Path(__file__).resolve().parents[1]
    subprocess.run([str(root / "scripts" / "libvirtd-up.sh")], check=True)
    conn = open_connection("qemu:///system")
    name = f"{prefix}-{os.getpid()}"
    tinyguest.start(conn, name, agent="libvirt", data_disk=False)
    try:
        GuestAgent.from_domain(name, conn).wait_for_agent(wait)
        yield name
    finally:
        tinyguest.destroy(conn, name)
