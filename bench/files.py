"""File transfer: the library vs minimal hand-written loops, on the same agents.

- Raw socket, the host's qemu-ga: download and upload through the library vs a tiny
  client (guest-file-open/read|write/close, json and base64 by hand, same chunk size).
- libvirt, a tiny TCG guest booted here and destroyed at the end: the library vs a bare
  ``libvirt_qemu.qemuAgentCommand`` loop at the best legal chunk sizes (2 MiB reads,
  writes whose request stays within 64 KiB).
- The socket chunk sizes: the library at 1, 2, 4 and 16 MiB per call, with CPU per MiB.
- Memory: the peak RSS growth of a 1 GiB download from the host agent, in a subprocess.

Contenders run in interleaved rounds (their order alternating), so machine noise hits
all alike; each figure is the median over the rounds, and ratios are library/minimal.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import libvirt
import libvirt_qemu

from qga_libvirt import GuestAgent, SocketTransport, Transport
from qga_libvirt.discovery import quiet_libvirt_errors
from qga_libvirt.operations.files import READ_CHUNK, WRITE_CHUNK
from qga_libvirt.testing import HostAgent
from qga_libvirt.transports.libvirt import MAX_REQUEST_BYTES
from scripts import tinyguest

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20
SWEEP_MIB = (1, 2, 4, 16)
LIBVIRT_READ_CHUNK = 2 * MIB
"""The largest read count libvirt carries as measured (3 MiB fails)."""

RoundTrip = Callable[[str], str | bytes]


class Minimal:
    """The floor: one request line out, one reply line back, json and base64 by hand."""

    def __init__(self, round_trip: RoundTrip) -> None:
        self.round_trip = round_trip

    def call(self, command: str, arguments: dict[str, Any]) -> Any:
        request = json.dumps({"execute": command, "arguments": arguments})
        return json.loads(self.round_trip(request))["return"]

    def download(self, guest: str, local: Path, chunk: int) -> int:
        handle = self.call("guest-file-open", {"path": guest, "mode": "rb"})
        done = 0
        with open(local, "wb") as out:
            while True:
                read = self.call("guest-file-read", {"handle": handle, "count": chunk})
                out.write(base64.b64decode(read["buf-b64"]))
                done += int(read["count"])
                if read["eof"] or not read["count"]:
                    break
        self.call("guest-file-close", {"handle": handle})
        return done

    def upload(self, local: Path, guest: str, chunk: int) -> int:
        handle = self.call("guest-file-open", {"path": guest, "mode": "wb"})
        done = 0
        with open(local, "rb") as source:
            while data := source.read(chunk):
                arguments = {"handle": handle, "buf-b64": base64.b64encode(data).decode()}
                done += int(self.call("guest-file-write", arguments)["count"])
        self.call("guest-file-close", {"handle": handle})
        return done


@contextmanager
def minimal_socket(path: Path) -> Iterator[Minimal]:
    """A minimal client on a fresh connection (the agent serves one client at a time)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        with sock.makefile("rb") as replies:

            def round_trip(request: str) -> bytes:
                sock.sendall(request.encode() + b"\n")
                return replies.readline()

            yield Minimal(round_trip)


def minimal_libvirt(domain: Any) -> Minimal:
    return Minimal(lambda request: libvirt_qemu.qemuAgentCommand(domain, request, 60, 0))


def best_libvirt_write_chunk() -> int:
    """The most bytes a guest-file-write request can carry within libvirt's 64 KiB."""
    envelope = json.dumps(
        {"execute": "guest-file-write", "arguments": {"handle": 2**31, "buf-b64": ""}}
    )
    return (MAX_REQUEST_BYTES - len(envelope)) // 4 * 3


class Chunked(GuestAgent):
    """The library with other chunk sizes, for the sweep."""

    def __init__(self, transport: Transport, chunk: int) -> None:
        super().__init__(transport, timeout=120)
        self.chunk = chunk

    @property
    def read_chunk(self) -> int:
        return self.chunk

    @property
    def write_chunk(self) -> int:
        return self.chunk


Contender = Callable[[], int]
"""One timed transfer; returns the bytes it moved."""


def race(contenders: dict[str, Contender], rounds: int) -> dict[str, float]:
    """Median MiB/s of each contender over interleaved rounds (order alternating)."""
    speeds: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else reversed(names):
            start = time.perf_counter()
            moved = contenders[name]()
            speeds[name].append(moved / (time.perf_counter() - start) / MIB)
    return {name: statistics.median(values) for name, values in speeds.items()}


def scratch_dir() -> tempfile.TemporaryDirectory[str]:
    """Local files live in RAM where there is /dev/shm: the disk is not what is measured."""
    shm = Path("/dev/shm")
    return tempfile.TemporaryDirectory(prefix="qga-bench-", dir=shm if shm.is_dir() else None)


def report(
    title: str, speeds: dict[str, float], ratios: dict[str, tuple[str, str]]
) -> dict[str, float]:
    print(title)
    for name, speed in speeds.items():
        print(f"  {name:34s} {speed:8.1f} MiB/s")
    out = {}
    for label, (mine, floor) in ratios.items():
        out[label] = speeds[mine] / speeds[floor]
        print(f"  ratio {label:28s} {out[label]:8.2f}  (target >= 0.90)")
    return out


# --- raw socket ---------------------------------------------------------------------------


def socket_throughput(host: HostAgent, work: Path, size: int, rounds: int) -> dict[str, float]:
    source, guest, back = work / "source.bin", work / "guest.bin", work / "back.bin"
    source.write_bytes(os.urandom(size))
    guest.write_bytes(source.read_bytes())

    def library(fn: Callable[[GuestAgent], int]) -> Contender:
        def run() -> int:
            with GuestAgent.from_socket(host.socket, 120, idle_timeout=None) as agent:
                return fn(agent)

        return run

    def minimal(fn: Callable[[Minimal], int]) -> Contender:
        def run() -> int:
            with minimal_socket(host.socket) as client:
                return fn(client)

        return run

    speeds = race(
        {
            "download, minimal client": minimal(lambda c: c.download(str(guest), back, READ_CHUNK)),
            "download, qga_libvirt": library(lambda a: a.download(str(guest), back)),
            "upload, minimal client": minimal(lambda c: c.upload(source, str(guest), WRITE_CHUNK)),
            "upload, qga_libvirt": library(lambda a: a.upload(source, str(guest))),
        },
        rounds,
    )
    assert back.read_bytes() == source.read_bytes() == guest.read_bytes()
    return report(
        f"file transfer, raw socket, host qemu-ga, {size // MIB} MiB, {rounds} rounds "
        f"(chunks: read {READ_CHUNK // MIB} MiB, write {WRITE_CHUNK // MIB} MiB):",
        speeds,
        {
            "socket download lib/minimal": ("download, qga_libvirt", "download, minimal client"),
            "socket upload lib/minimal": ("upload, qga_libvirt", "upload, minimal client"),
        },
    )


def chunk_sweep(host: HostAgent, work: Path, size: int, rounds: int) -> None:
    """The library at several socket chunk sizes: MiB/s, and CPU per MiB on both sides.

    CPU is the steadier figure on a shared machine: the agent and the client take turns,
    so their CPU per MiB added up is what sets the pace on an idle one.
    """
    source, guest, back = work / "source.bin", work / "guest.bin", work / "back.bin"
    source.write_bytes(os.urandom(size))
    guest.write_bytes(source.read_bytes())
    assert host.process is not None
    agent_pid = host.process.pid
    cpu: dict[str, list[tuple[float, float]]] = {}  # name -> [(agent, client) seconds]

    def with_chunk(name: str, chunk: int, fn: Callable[[GuestAgent], int]) -> Contender:
        def run() -> int:
            agent_before, client_before = _cpu_seconds(agent_pid), _own_cpu_seconds()
            with Chunked(SocketTransport(host.socket, idle_timeout=None), chunk) as agent:
                moved = fn(agent)
            cpu.setdefault(name, []).append(
                (_cpu_seconds(agent_pid) - agent_before, _own_cpu_seconds() - client_before)
            )
            return moved

        return run

    contenders: dict[str, Contender] = {}
    for mib in SWEEP_MIB:
        name = f"download, {mib:2d} MiB chunks"
        contenders[name] = with_chunk(name, mib * MIB, lambda a: a.download(str(guest), back))
        name = f"upload, {mib:2d} MiB chunks"
        contenders[name] = with_chunk(name, mib * MIB, lambda a: a.upload(source, str(guest)))
    speeds = race(contenders, rounds)
    print(f"socket chunk sizes, {size // MIB} MiB, {rounds} rounds (CPU: least over rounds):")
    for name, speed in speeds.items():
        agent_cpu = min(a for a, _ in cpu[name]) / size * MIB * 1000
        client_cpu = min(c for _, c in cpu[name]) / size * MIB * 1000
        print(
            f"  {name:26s} {speed:8.1f} MiB/s   CPU per MiB: agent {agent_cpu:5.1f} ms, "
            f"client {client_cpu:5.1f} ms"
        )


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of another process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def memory_growth(host: HostAgent, work: Path, size: int = 1 << 30) -> float:
    """Peak RSS growth (MiB) of a download of ``size`` bytes, in a fresh interpreter."""
    guest = work / "sparse.bin"
    with open(guest, "wb") as out:
        out.truncate(size)
    probe = subprocess.run(
        [sys.executable, "-m", "bench.files", "--probe", str(host.socket), str(guest), str(work)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(probe.stdout)
    growth = float(figures["peak_mib"] - figures["baseline_mib"])
    print(f"memory, download of {size // MIB} MiB (sparse) from the host agent, in a subprocess:")
    print(
        f"  peak RSS {figures['baseline_mib']:.0f} MiB before, {figures['peak_mib']:.0f} MiB "
        f"peak: growth {growth:.1f} MiB  (target < 64), {figures['mib_per_s']:.0f} MiB/s"
    )
    return growth


def probe(socket_path: str, guest: str, work: str) -> None:
    """The subprocess side of :func:`memory_growth`: prints its figures as JSON.

    The peak is the kernel's high-water mark of this process's RSS (VmHWM, what
    ``ru_maxrss`` reports), reset to the current RSS just before the download. A fresh
    ``ru_maxrss`` is no baseline here: a child inherits its parent's across fork and exec.
    """
    with GuestAgent.from_socket(socket_path, 120, idle_timeout=None) as agent:
        agent.ping()
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        baseline = _status_mib("VmHWM")
        start = time.perf_counter()
        moved = agent.download(guest, Path(work) / "downloaded.bin")
        seconds = time.perf_counter() - start
        peak = _status_mib("VmHWM")
    (Path(work) / "downloaded.bin").unlink()
    figures = {"baseline_mib": baseline, "peak_mib": peak, "mib_per_s": moved / seconds / MIB}
    print(json.dumps(figures))


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise LookupError(field)


# --- libvirt ------------------------------------------------------------------------------


def libvirt_throughput(work: Path, down_size: int, up_size: int, rounds: int) -> dict[str, float]:
    """Downloads of ``down_size`` and uploads of ``up_size`` bytes (uploads are 3-4 times
    slower through libvirt: smaller sizes keep the rounds even)."""
    daemon = subprocess.run([str(ROOT / "scripts" / "libvirtd-up.sh")], check=False)
    if daemon.returncode not in (0, 2):  # 2: no TCP listener, which this does not need
        raise RuntimeError("scripts/libvirtd-up.sh failed: libvirtd is needed")
    conn = libvirt.open("qemu:///system")
    name = f"qgabench{os.getpid()}"
    tinyguest.destroy(conn, name)
    domain = tinyguest.start(conn, name, tinyguest.build(), agent="libvirt", data_disk=False)
    try:
        agent = GuestAgent.from_domain(domain, timeout=120)
        agent.wait_for_agent(180)
        down, back, up = work / "down.bin", work / "back.bin", work / "up.bin"
        down.write_bytes(os.urandom(down_size))
        up.write_bytes(os.urandom(up_size))
        agent.upload(down, "/tmp/bench-down.bin")
        bare = minimal_libvirt(domain)
        write_chunk = best_libvirt_write_chunk()
        speeds = race(
            {
                "download, bare qemuAgentCommand": lambda: bare.download(
                    "/tmp/bench-down.bin", back, LIBVIRT_READ_CHUNK
                ),
                "download, qga_libvirt": lambda: agent.download("/tmp/bench-down.bin", back),
                "upload, bare qemuAgentCommand": lambda: bare.upload(
                    up, "/tmp/bench-up.bin", write_chunk
                ),
                "upload, qga_libvirt": lambda: agent.upload(up, "/tmp/bench-up.bin"),
            },
            rounds,
        )
        assert back.read_bytes() == down.read_bytes()
        assert agent.read_file("/tmp/bench-up.bin") == up.read_bytes()
        return report(
            f"file transfer, libvirt, tiny TCG guest, downloads of {down_size // MIB} MiB, "
            f"uploads of {up_size // MIB} MiB, {rounds} rounds (bare: read "
            f"{LIBVIRT_READ_CHUNK} B, write {write_chunk} B; library: read {agent.read_chunk} "
            f"B, write {agent.write_chunk} B):",
            speeds,
            {
                "libvirt download lib/bare": (
                    "download, qga_libvirt",
                    "download, bare qemuAgentCommand",
                ),
                "libvirt upload lib/bare": ("upload, qga_libvirt", "upload, bare qemuAgentCommand"),
            },
        )
    finally:
        tinyguest.destroy(conn, name)
        conn.close()


def main(rounds: int = 5) -> dict[str, float]:
    quiet_libvirt_errors()  # a program: libvirt's printed errors would garble the tables
    figures: dict[str, float] = {}
    with HostAgent() as host, scratch_dir() as scratch:
        work = Path(scratch)
        figures.update(socket_throughput(host, work, 64 * MIB, rounds))
        chunk_sweep(host, work, 32 * MIB, 3)
        figures["memory growth MiB"] = memory_growth(host, work)
    with scratch_dir() as scratch:
        figures.update(libvirt_throughput(Path(scratch), 16 * MIB, 4 * MIB, rounds))
    return figures


if __name__ == "__main__":
    if sys.argv[1:2] == ["--probe"]:
        probe(*sys.argv[2:5])
    else:
        main()
