"""A scripted agent on a unix socket, for the faults no real qemu-ga produces on demand.

It speaks enough QGA to be a peer (0xFF resync, guest-sync-delimited, guest-sync, ping,
info) and lets a test replace the answer to any request: stale replies first, garbage,
a reply split byte by byte, a stray 0xFF, a late reply, a connection closed mid-reply.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Handler = Callable[["Peer", dict[str, Any]], bool]
"""Gets each request; returns True when it answered it itself."""


def line(message: object) -> bytes:
    return json.dumps(message).encode() + b"\n"


class Peer:
    """One accepted connection, as the handler sees it."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn

    def send(self, data: bytes, *, bytewise: bool = False) -> None:
        if not bytewise:
            self.conn.sendall(data)
            return
        for i in range(len(data)):
            self.conn.sendall(data[i : i + 1])
            time.sleep(0.0001)

    def reply(self, request: dict[str, Any], value: Any, **kw: bool) -> None:
        message: dict[str, Any] = {"return": value}
        if "id" in request:
            message["id"] = request["id"]
        self.send(line(message), **kw)

    def error(self, request: dict[str, Any], error_class: str, desc: str) -> None:
        message: dict[str, Any] = {"error": {"class": error_class, "desc": desc}}
        if "id" in request:
            message["id"] = request["id"]
        self.send(line(message))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.shutdown(socket.SHUT_RDWR)
        self.conn.close()


class FakeAgent:
    """Serves ``path`` from a thread, one client at a time, until :meth:`stop`."""

    def __init__(self, path: Path, handler: Handler | None = None, *, backlog: int = 4) -> None:
        self.path = path
        self.handler = handler
        self.requests: list[dict[str, Any]] = []
        self.connections = 0
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(backlog)
        self._server.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._server.close()

    def __enter__(self) -> FakeAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            self._talk(Peer(conn))

    def _talk(self, peer: Peer) -> None:
        peer.conn.settimeout(0.1)
        buffer = b""
        while not self._stop.is_set():
            try:
                data = peer.conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                peer.conn.close()
                return
            buffer += data
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                if raw.startswith(b"\xff"):
                    raw = raw.lstrip(b"\xff")
                    peer.send(line({"error": {"class": "GenericError", "desc": "stray '\\uFFFD'"}}))
                request = json.loads(raw)
                self.requests.append(request)
                try:
                    handled = self.handler is not None and self.handler(peer, request)
                    if not handled:
                        self._default(peer, request)
                except OSError:
                    return
                if peer.conn.fileno() < 0:
                    return

    @staticmethod
    def _default(peer: Peer, request: dict[str, Any]) -> None:
        command = request["execute"]
        arguments = request.get("arguments", {})
        if command == "guest-sync-delimited":
            message: dict[str, Any] = {"return": arguments["id"]}
            if "id" in request:
                message["id"] = request["id"]
            peer.send(b"\xff" + line(message))
        elif command == "guest-sync":
            peer.reply(request, arguments["id"])
        elif command == "guest-info":
            peer.reply(request, {"version": "fake-1.0", "supported_commands": []})
        elif command in ("guest-shutdown", "guest-suspend-ram"):
            pass  # no reply on success
        else:
            peer.reply(request, {})
