"""The raw-socket backend: a QEMU chardev unix socket (or the host's qemu-ga).

Sharing policy. A chardev socket serves ONE client at a time and queues the others, so
a connection held open locks every other client (another process, virsh, a script) out.
This transport therefore closes its connection after ``idle_timeout`` seconds without a
request (default :data:`DEFAULT_IDLE_TIMEOUT`, 2 s): back-to-back calls share one
connection, and an idle program gives the agent back. ``idle_timeout=0`` connects per
call; ``None`` keeps the connection until :meth:`SocketTransport.close`. Connections are
always shut down before they are closed, so the agent sees the end at once.

If the agent went away (agent or VM restart), the next call finds the dead connection
before its request is written and reconnects. While other clients hold the socket and
QEMU's queue is full (connect fails with EAGAIN), connecting is retried with a short
backoff until the call's deadline.

Whatever escapes a call (a timeout, a broken stream, KeyboardInterrupt, RecursionError)
leaves the transport usable: the conversation is abandoned, so the next call resyncs,
on a new connection where there is a path to reconnect to.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import itertools
import math
import os
import select
import socket
import threading
import time
import weakref
from typing import Final

from ..errors import (
    AgentTimeoutError,
    AgentUnreachableError,
    ConnectionLostError,
    GuestAgentError,
    Hint,
    Remedy,
    ReplyTooLargeError,
)
from ..protocol import DEFAULT_MAX_REPLY_BYTES, Conversation, Reply
from .base import Features, Identity, Request

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "SocketTransport",
    "busy_error",
    "connect_error",
    "lost_error",
    "timeout_error",
]

DEFAULT_IDLE_TIMEOUT: Final = 2.0
_RECV_SIZE: Final = 1 << 20
_scratch = threading.local()  # one receive buffer per thread, not one per transport


def _recv_buffer() -> bytearray:
    """This thread's receive buffer: what is received is copied out at once (into the
    conversation), so transports used from one thread can share it."""
    buffer: bytearray | None = getattr(_scratch, "buffer", None)
    if buffer is None:
        buffer = _scratch.buffer = bytearray(_RECV_SIZE)
    return buffer


class _Reaper:
    """One thread for the whole process that gives idle connections back.

    A transport that opens a connection registers with its idle deadline; the thread
    sleeps until the earliest one, closes the connection if it is still idle then (and
    no call holds it), or registers it again for its new deadline. A thread per
    connection would cost more than the connection itself (measured: about 1 ms of
    thread start per connect + ping + close).
    """

    def __init__(self) -> None:
        self._due: list[tuple[float, int, weakref.ref[SocketTransport]]] = []
        self._changed = threading.Condition()
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, transport: SocketTransport, due: float) -> None:
        with self._changed:
            heapq.heappush(self._due, (due, next(self._order), weakref.ref(transport)))
            if self._thread is None or not self._thread.is_alive():  # also after a fork
                self._thread = threading.Thread(target=self._run, name="qga idle", daemon=True)
                self._thread.start()
            elif self._due[0][0] == due:
                self._changed.notify()  # sooner than what the thread sleeps for

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._changed.wait(self._due[0][0] - time.monotonic() if self._due else None)
                _due, _order, ref = heapq.heappop(self._due)
            transport = ref()
            if transport is not None:
                again = transport._reap()
                if again is not None:
                    self.watch(transport, again)


_REAPER = _Reaper()


class SocketTransport:
    """Talk to an agent over a unix socket: one request at a time, from any thread.

    Args:
        path: the chardev's unix socket; or None with ``sock``.
        sock: an already connected socket (taken over; cannot be reopened once lost).
        idle_timeout: seconds without a request before the connection is given back
            (see the module docs); 0 connects per call, None keeps it open.
        target: how messages name what is reached (default ``socket PATH``).
        max_reply_line: the largest reply taken; past it the reply is dropped unread and
            ReplyTooLargeError raised (default: 96 MiB, above any legitimate reply).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        sock: socket.socket | None = None,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        target: str | None = None,
        max_reply_line: int = DEFAULT_MAX_REPLY_BYTES,
    ) -> None:
        if (path is None) == (sock is None):
            raise ValueError("give either a socket path or a connected socket")
        self.path = os.fspath(path) if path is not None else None
        self.idle_timeout = idle_timeout
        self._sock = sock
        self._poller: select.poll | None = None
        self.max_reply_line = max_reply_line
        self._conversation = Conversation(max_reply_bytes=max_reply_line)
        self._lock = threading.Lock()
        self._last_used = time.monotonic()
        self._closed = False
        if target is not None:
            self._target = target
        elif sock is not None:
            self._target = f"socket fd {sock.fileno()}"
        else:
            self._target = f"socket {self.path}"

    @property
    def features(self) -> Features:
        """The socket path, for another process (none for a socket given by fd)."""
        return Features(identity=None if self.path is None else Identity(socket=self.path))

    @property
    def target(self) -> str:
        return self._target

    @property
    def max_request_bytes(self) -> int | None:
        return None

    @property
    def max_reply_bytes(self) -> int | None:
        return None

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def execute(self, request: Request, timeout: float) -> Reply:
        # Waiting for another thread's call counts against this call's timeout.
        deadline = time.monotonic() + timeout
        if not self._lock.acquire(timeout=max(timeout, 0)):
            raise AgentTimeoutError(
                f"{request.command} to {self._target} waited {timeout:g} s for other calls "
                "on this connection to finish (one runs at a time), so it was not sent",
                target=self._target,
                command=request.command,
            )
        try:
            if self._closed:
                raise AgentUnreachableError(
                    f"{self._target} was closed; open a new GuestAgent",
                    target=self._target,
                    command=request.command,
                )
            return self._execute(request, timeout, deadline)
        except GuestAgentError:
            raise
        except BaseException:
            # KeyboardInterrupt, RecursionError, ...: it propagates unchanged, and the
            # stream is in an unknown state (half a request written, a reply half read):
            # resync before the next request, on a new connection if we can.
            self._conversation.abandon()
            if self.path is not None:
                self._disconnect()
            raise
        finally:
            self._last_used = time.monotonic()
            if self.idle_timeout == 0:
                self._disconnect()
            self._lock.release()

    def _execute(self, request: Request, timeout: float, deadline: float) -> Reply:
        phase = "connect"
        try:
            while True:
                fresh = self._sock is None or self._poller is None
                sock, poller = self._ensure_connected(request.command, deadline)
                phase = "sync"
                try:
                    # A request is written only to an agent that just proved it is there:
                    # one written behind an unanswered resync would run whenever the agent
                    # came back, long after its caller gave up.
                    if self._conversation.needs_resync:
                        self._send(sock, poller, self._conversation.resync(), deadline)
                        self._receive(sock, poller, deadline)
                    data = self._conversation.send(
                        request.command, request.arguments, replies=request.replies
                    )
                    phase = "request"
                    self._send(sock, poller, data, deadline)
                    phase = "reply"
                    reply = self._receive(sock, poller, deadline)
                    assert reply is not None  # a request in flight ends only with its reply
                    return reply
                except (BrokenPipeError, ConnectionResetError):
                    # A connection kept from an earlier call whose peer has gone (the agent
                    # or VM restarted since): nothing of this request was delivered, so a
                    # new connection may carry it. Once only.
                    if fresh or self.path is None or phase not in ("sync", "request"):
                        raise
                    self._disconnect()
        except TimeoutError as exc:
            self._conversation.abandon()
            raise self._timeout(request.command, timeout, sent=phase == "reply") from exc
        except OSError as exc:
            self._conversation.abandon()
            self._disconnect()
            raise self._lost(request.command, exc, writing=phase != "reply") from exc
        except GuestAgentError as exc:
            if isinstance(exc, ReplyTooLargeError) and self.path is not None:
                self._disconnect()  # rather than drain the rest of it through the socket
            exc.target, exc.command = self._target, request.command
            raise

    @staticmethod
    def _send(sock: socket.socket, poller: select.poll, data: bytes, deadline: float) -> None:
        """Write all of ``data``, waiting for room no later than the deadline."""
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return
        view = memoryview(data)[sent:]
        while view:
            try:
                view = view[sock.send(view) :]
            except BlockingIOError:
                poller.modify(sock, select.POLLOUT)
                try:
                    _wait(poller, deadline)
                finally:
                    poller.modify(sock, select.POLLIN)

    def _receive(self, sock: socket.socket, poller: select.poll, deadline: float) -> Reply | None:
        """The reply to the request in flight; with none in flight, None once the
        resync is answered."""
        conv, buffer = self._conversation, _recv_buffer()
        reply = conv.next_reply() if conv.buffered else None  # data left from before
        while reply is None and (conv.in_flight or conv.syncing):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not poller.poll(math.ceil(remaining * 1000)):
                raise TimeoutError
            try:
                n = sock.recv_into(buffer)
            except BlockingIOError:
                continue
            if n == 0:
                raise ConnectionResetError(errno.ECONNRESET, "the agent closed the connection")
            conv.receive_data(memoryview(buffer)[:n])
            reply = conv.next_reply()
        return reply

    def _lost(self, command: str, exc: OSError, *, writing: bool) -> ConnectionLostError:
        return lost_error(self._target, command, exc, writing=writing)

    def _timeout(self, command: str, timeout: float, *, sent: bool) -> AgentTimeoutError:
        synced = self._conversation.synced_once
        return timeout_error(self._target, command, timeout, sent=sent, synced_once=synced)

    def _ensure_connected(self, command: str, deadline: float) -> tuple[socket.socket, select.poll]:
        if self._sock is not None and self._poller is not None:
            return self._sock, self._poller
        if self._sock is None:
            if self.path is None:
                raise ConnectionLostError(
                    f"{self._target} was closed by the agent; a socket given by fd cannot be "
                    "reopened: connect again and wrap the new one",
                    target=self._target,
                    command=command,
                )
            self._sock = self._connect(command, deadline)
            self._conversation = Conversation(max_reply_bytes=self.max_reply_line)
            if self.idle_timeout:
                _REAPER.watch(self, time.monotonic() + self.idle_timeout)
        sock = self._sock
        sock.setblocking(False)  # I/O waits in poll(), bounded by the call's deadline
        self._poller = select.poll()
        self._poller.register(sock, select.POLLIN)
        return sock, self._poller

    def _connect(self, command: str, deadline: float) -> socket.socket:
        """A new connection to the path; while the chardev's queue is full (EAGAIN),
        retried with a short backoff until the deadline."""
        assert self.path is not None
        delay = 0.005
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                sock.connect(self.path)
                return sock
            except BlockingIOError as exc:
                sock.close()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise busy_error(self._target, command) from exc
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 0.1)
            except OSError as exc:
                sock.close()
                raise connect_error(self._target, command, exc, self.path) from exc

    def _reap(self) -> float | None:
        """Called by the reaper: close the connection if it is idle; else when to look
        again (None: nothing to watch any more)."""
        idle = self.idle_timeout
        if self._closed or self._sock is None or not idle:
            return None
        due = self._last_used + idle
        if time.monotonic() < due:
            return due
        if not self._lock.acquire(blocking=False):
            return time.monotonic() + idle  # a call is running: its end resets the clock
        try:
            if time.monotonic() - self._last_used < idle:
                return self._last_used + idle
            self._disconnect()
            return None
        finally:
            self._lock.release()

    def _disconnect(self) -> None:
        sock, self._sock, self._poller = self._sock, None, None
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        self._conversation = Conversation(max_reply_bytes=self.max_reply_line)

    def close(self) -> None:
        """Shut the connection down; the transport cannot be used afterwards."""
        with self._lock:
            self._closed = True
            self._disconnect()


# The words of this backend's failures, for the blocking and the asyncio transports.


def lost_error(target: str, command: str, exc: OSError, *, writing: bool) -> ConnectionLostError:
    """The connection broke while writing a request or reading its reply."""
    what = "writing to" if writing else "reading the reply to " + command + " from"
    return ConnectionLostError(
        f"lost the connection while {what} {target}: {exc.strerror or exc}; "
        "the agent or VM may have restarted, the next call reconnects",
        writing=writing,
        target=target,
        command=command,
    )


def timeout_error(
    target: str, command: str, timeout: float, *, sent: bool, synced_once: bool
) -> AgentTimeoutError:
    """No reply in time: to the request (``sent``) or to the resync before it."""
    if sent:
        hint = "the command may still be running in the guest"
    elif synced_once:
        hint = "the agent stopped answering (it did not answer a resync); nothing was sent"
    else:
        hint = (
            "the agent did not answer a resync, so nothing was sent: is qemu-ga running "
            "in the guest? (another client may also be holding the socket: a chardev "
            "serves one client at a time)"
        )
    return AgentTimeoutError(
        f"no reply to {command} from {target} within {timeout:g} s: {hint}",
        target=target,
        command=command,
    )


def busy_error(target: str, command: str) -> AgentUnreachableError:
    """Connecting kept failing with EAGAIN until the deadline."""
    return AgentUnreachableError(
        f"cannot connect to {target}: it is busy (other clients hold "
        "the socket and its queue is full; a chardev serves one client at a "
        "time)",
        target=target,
        command=command,
        hint=Hint(
            Remedy.SHARE_SOCKET,
            "share one GuestAgent between threads instead of one each, or "
            "give the other clients idle_timeout=0",
        ),
    )


def connect_error(target: str, command: str, exc: OSError, path: str) -> AgentUnreachableError:
    """Connecting failed for good."""
    return AgentUnreachableError(
        f"cannot connect to {target}: {_connect_hint(exc, path)}",
        target=target,
        command=command,
    )


def _connect_hint(exc: OSError, path: str) -> str:
    if isinstance(exc, FileNotFoundError):
        return (
            f"{path} does not exist: is the VM running with an agent channel "
            "(-chardev socket,path=...,server=on) or qemu-ga listening there?"
        )
    if isinstance(exc, ConnectionRefusedError):
        return f"nothing is listening on {path}: the VM or qemu-ga has stopped"
    if isinstance(exc, PermissionError):
        return f"permission denied on {path}: run as a user that may open it (often root)"
    if isinstance(exc, TimeoutError):
        return "the connection timed out: the socket's owner is not accepting connections"
    if exc.errno == errno.ENOTSOCK or exc.errno == errno.ECONNREFUSED:
        return f"{path} is not a listening unix socket"
    return exc.strerror or str(exc)


def _wait(poller: select.poll, deadline: float) -> None:
    """Block until the socket is ready as registered; TimeoutError at the deadline."""
    remaining = deadline - time.monotonic()
    if remaining <= 0 or not poller.poll(math.ceil(remaining * 1000)):
        raise TimeoutError
