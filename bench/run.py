"""run(): the library vs a bare exec + tight status poll, on the socket and through libvirt.

The floor is the least a client can do: guest-exec (capture-output), then
guest-exec-status in a tight loop (no sleep at all) until the process exited.

- socket: ``run(["/bin/true"])`` against one host qemu-ga (agent capture), the library
  on a persistent connection vs a hand-written client on its own;
- libvirt: ``run(["echo", "x"])`` against a tiny TCG guest (booted here, destroyed at the
  end; ``QGA_BENCH_DOMAIN=NAME`` uses a running one instead; ``--quick`` runs this row
  only then) vs the same exec + tight poll by bare ``libvirt_qemu.qemuAgentCommand``.
  Through libvirt the library captures output in guest files (a status reply above
  ~4 MiB is lost, above 10 MiB it breaks the channel): what that guarantee costs on the
  quickest command there is.

Contenders run in interleaved batches in one process; figures are medians of batch
means, with the agent calls each run made (counted at the transport).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qga_libvirt import GuestAgent
from qga_libvirt.testing import HostAgent

from .harness import QUICK, Stats, interleaved, libvirt_guest, load, report

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 3.0  # socket: the library's median run(["/bin/true"])
LIBVIRT_TARGET = 1.3


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


class Counted:
    """Counts the agent calls an agent object makes (wraps its transport's execute)."""

    def __init__(self, agent: GuestAgent) -> None:
        self.calls = 0
        execute = agent.transport.execute

        def counting(request: Any, timeout: float) -> Any:
            self.calls += 1
            return execute(request, timeout)

        agent.transport.execute = counting  # type: ignore[method-assign]


def socket_row(batches: int, per_batch: int) -> float:
    before = load()
    contenders = {"tight poll": tight_poll_client, "qga_libvirt": None}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    calls = 0
    runs = 0
    with HostAgent() as host:
        # The agent serves one client at a time: each contender's batch runs on a fresh
        # connection of its own, the other's given back. Warm-up runs are not timed.
        for batch in range(batches):
            names = list(contenders) if batch % 2 == 0 else list(reversed(contenders))
            for name in names:
                if name == "tight poll":
                    run_true, close = tight_poll_client(host.socket)
                else:
                    agent = GuestAgent.from_socket(host.socket, idle_timeout=None)
                    counter = Counted(agent)

                    def run_true(agent: GuestAgent = agent) -> int:
                        return agent.run(["/bin/true"]).exitcode or 0

                    close = agent.close
                for _ in range(3):
                    assert run_true() == 0
                if name == "qga_libvirt":
                    counter.calls = 0
                for _ in range(per_batch):
                    start = time.perf_counter()
                    assert run_true() == 0
                    times[name].append(time.perf_counter() - start)
                if name == "qga_libvirt":
                    calls += counter.calls
                    runs += per_batch
                close()
    stats = {name: Stats(tuple(values)) for name, values in times.items()}
    ratios = report(
        f'run(["/bin/true"]), socket, host qemu-ga, {batches} interleaved batches of {per_batch}:',
        stats,
        "tight poll",
        before=before,
    )
    library = stats["qga_libvirt"].median * 1e3
    print(f"  qga_libvirt.run median {library:.2f} ms (target <= {TARGET_MS:g} ms)")
    print(f"  agent calls per run: qga_libvirt {calls / runs:.1f}, tight poll >= 2")
    return ratios["qga_libvirt"]


def guest() -> contextlib.AbstractContextManager[str]:
    """A running tiny guest with a libvirt agent channel: QGA_BENCH_DOMAIN, or one booted."""
    return libvirt_guest("qga-bench-run")


def libvirt_row(batches: int, per_batch: int) -> float:
    import libvirt_qemu

    from qga_libvirt.discovery import open_connection

    before = load()
    with guest() as name:
        conn = open_connection("qemu:///system")
        dom = conn.lookupByName(name)
        agent = GuestAgent.from_domain(name, conn)
        counter = Counted(agent)
        bare_calls = 0

        def call(command: str, arguments: dict[str, object]) -> Any:
            nonlocal bare_calls
            bare_calls += 1
            text = json.dumps({"execute": command, "arguments": arguments})
            return json.loads(libvirt_qemu.qemuAgentCommand(dom, text, 5, 0))["return"]

        def bare() -> str:
            pid = call("guest-exec", {"path": "echo", "arg": ["x"], "capture-output": True})
            while True:
                status = call("guest-exec-status", {"pid": pid["pid"]})
                if status["exited"]:
                    return status.get("out-data", "")  # type: ignore[no-any-return]

        def library() -> bytes:
            return agent.run(["echo", "x"]).stdout

        assert bare() == "eAo="  # x and a newline
        assert library() == b"x\n"
        bare_calls = counter.calls = 0
        stats = interleaved(
            {"bare exec + tight poll": bare, "qga_libvirt": library}, batches, per_batch
        )
        runs = batches * per_batch + 1  # with the warm-up call of interleaved()
        ratios = report(
            f'run(["echo", "x"]), libvirt, TCG tiny guest, {batches} interleaved batches '
            f"of {per_batch}:",
            stats,
            "bare exec + tight poll",
            target=LIBVIRT_TARGET,
            before=before,
        )
        print(
            f"  agent calls per run: qga_libvirt {counter.calls / runs:.1f}, "
            f"bare {bare_calls / runs:.1f}"
        )
    return ratios["qga_libvirt"]


def main(batches: int = 0, per_batch: int = 25) -> float:
    batches = batches or (6 if QUICK else 20)
    ratio = socket_row(batches, per_batch)
    if QUICK and not os.environ.get("QGA_BENCH_DOMAIN"):  # booting a guest takes minutes
        print("  (the libvirt row: a full run, or --quick with QGA_BENCH_DOMAIN=NAME)")
        return ratio
    return libvirt_row(batches, 5 if QUICK else 10)


if __name__ == "__main__":
    main()
