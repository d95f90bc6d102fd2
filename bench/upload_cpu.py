"""Client CPU per uploaded MiB: the library's upload vs a floor that builds its requests
by hand (the base64 spliced into the request line, never escaped or copied twice).

Both upload the same file to one host qemu-ga in 2 MiB chunks, on their own connection,
in interleaved rounds; the figure is this process's CPU time (user + system) per MiB,
the least over rounds (CPU is the steadier figure on a shared machine).
"""

from __future__ import annotations

import base64
import os
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from qga_libvirt import GuestAgent
from qga_libvirt.operations.files import WRITE_CHUNK
from qga_libvirt.testing import HostAgent

from .harness import QUICK, Stats, load, report

MIB = 1 << 20


def floor_upload(path: str, local: Path, guest: str) -> int:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock, sock.makefile("rb") as rf:
        sock.connect(path)

        def call(request: bytes) -> bytes:
            sock.sendall(request)
            return rf.readline()

        reply = call(
            b'{"execute":"guest-file-open","arguments":{"path":"%s","mode":"wb"}}\n'
            % guest.encode()
        )
        handle = int(reply.split(b":")[1].strip(b" }\n"))
        done = 0
        with open(local, "rb") as source:
            while data := source.read(WRITE_CHUNK):
                call(
                    b'{"execute":"guest-file-write","arguments":{"handle":%d,"buf-b64":"' % handle
                    + base64.b64encode(data)
                    + b'"}}\n'
                )
                done += len(data)
        call(b'{"execute":"guest-file-close","arguments":{"handle":%d}}\n' % handle)
        return done


def library_upload(path: str, local: Path, guest: str) -> int:
    # In place, like the floor: the atomic rename costs a guest-exec, not CPU per MiB.
    with GuestAgent.from_socket(path, 120, idle_timeout=None) as agent:
        return agent.upload(local, guest, atomic=False)


def cpu_per_mib(run: Callable[[], int]) -> float:
    start = time.process_time()
    moved = run()
    return (time.process_time() - start) / (moved / MIB)


def main() -> dict[str, float]:
    size = (16 if QUICK else 64) * MIB
    rounds = 3 if QUICK else 7
    with HostAgent() as host, tempfile.TemporaryDirectory(prefix="qga-up-", dir="/dev/shm") as d:
        local, guest = Path(d) / "source.bin", str(Path(d) / "guest.bin")
        local.write_bytes(os.urandom(size))
        path = str(host.socket)
        contenders = {
            "floor: requests built by hand": lambda: floor_upload(path, local, guest),
            "qga_libvirt upload": lambda: library_upload(path, local, guest),
        }
        samples: dict[str, list[float]] = {name: [] for name in contenders}
        before = load()
        for round_ in range(rounds):
            names = list(contenders) if round_ % 2 == 0 else list(reversed(contenders))
            for name in names:
                samples[name].append(cpu_per_mib(contenders[name]))
            assert Path(guest).read_bytes() == local.read_bytes()
        stats = {name: Stats((min(values),)) for name, values in samples.items()}
        return report(
            f"client CPU per uploaded MiB, {size // MIB} MiB in {WRITE_CHUNK // MIB} MiB "
            f"chunks, least of {rounds} interleaved rounds:",
            stats,
            "floor: requests built by hand",
            target=1.05,
            before=before,
        )


if __name__ == "__main__":
    main()
