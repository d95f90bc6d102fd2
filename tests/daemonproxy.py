"""A TCP forwarder in front of libvirtd's qemu+tcp port: a libvirtd restart on demand.

To a libvirt client, libvirtd restarting is its connection closing under it, then a
while in which connecting is refused, then a daemon that answers again. :meth:`cut`
closes every forwarded connection (optionally in the middle of a call) and
:meth:`down`/:meth:`up` refuse and accept connections, without touching the real daemon
that the other tests (and other people's VMs) share.

The forwarder runs in a process of its own (``python -m tests.daemonproxy``), driven by
lines on its stdin: in the test's process its threads would compete with the client for
the GIL and slow every call down.
"""

from __future__ import annotations

import contextlib
import select
import socket
import subprocess
import sys
import threading
from pathlib import Path


class _Forwarder:
    """Forwards 127.0.0.1:PORT to ``upstream`` (runs in the proxy's process)."""

    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 16509)) -> None:
        self.upstream = upstream
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._listener: socket.socket | None = None
        self.port = 0
        self.accepted = 0
        self.up()

    def up(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        """Refuse new connections (the daemon is not running) and cut the open ones."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        self.cut()

    def cut(self) -> None:
        """Close every forwarded connection, as a daemon that exits does."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in pair:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def restart(self) -> None:
        self.down()
        self.up()

    def close(self) -> None:
        self.down()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            for s in (client, server):  # libvirt's RPC is request/reply: no Nagle delays
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._pairs.append((client, server))
                self.accepted += 1
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 1.0)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    peers[s].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()


class DaemonProxy:
    """The forwarder's process; ``uri`` is the libvirt URI to use through it."""

    def __init__(self, upstream_port: int = 16509) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.daemonproxy", str(upstream_port)],
            cwd=Path(__file__).resolve().parent.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.port = int(self._read())

    @property
    def uri(self) -> str:
        return f"qemu+tcp://127.0.0.1:{self.port}/system"

    def _read(self) -> str:
        assert self._proc.stdout is not None
        answer = self._proc.stdout.readline().strip()
        if not answer:
            raise RuntimeError("the libvirtd proxy exited")
        return answer

    def _do(self, what: str) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(what + "\n")
        self._proc.stdin.flush()
        assert self._read() == "ok"

    def cut(self) -> None:
        """Close every open connection (libvirtd exiting, without the pause)."""
        self._do("cut")

    def down(self) -> None:
        """libvirtd stopped: connections cut, new ones refused."""
        self._do("down")

    def up(self) -> None:
        """libvirtd is back."""
        self._do("up")

    def restart(self) -> None:
        self.down()
        self.up()

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                stream.close()

    def __enter__(self) -> DaemonProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main() -> None:
    forwarder = _Forwarder(("127.0.0.1", int(sys.argv[1])))
    print(forwarder.port, flush=True)
    for command in sys.stdin:
        getattr(forwarder, command.strip())()
        print("ok", flush=True)


if __name__ == "__main__":
    main()
