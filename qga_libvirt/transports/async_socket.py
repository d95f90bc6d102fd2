"""The raw-socket backend on asyncio: the same conversation, no thread.

:class:`AsyncSocketTransport` is :class:`~qga_libvirt.transports.socket.SocketTransport`
for an event loop: the same sans-I/O :class:`~qga_libvirt.protocol.Conversation`
(resync before the first request and after any doubt), the same sharing policy (the
connection is given back after ``idle_timeout`` idle seconds, by a timer on the loop
rather than a thread), the same retry while the chardev's queue is full, and the same
errors. One request runs at a time; other calls wait their turn, within their timeout.

Cancelling a call (``task.cancel()``, ``asyncio.timeout``) abandons the conversation:
the next call resyncs, on a new connection, as after a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import socket

from ..errors import AgentTimeoutError, AgentUnreachableError, GuestAgentError, ReplyTooLargeError
from ..protocol import DEFAULT_MAX_REPLY_BYTES, Conversation, Reply
from .base import Request
from .socket import DEFAULT_IDLE_TIMEOUT, busy_error, connect_error, lost_error, timeout_error

__all__ = ["AsyncSocketTransport"]


def _same(link: _Link) -> _Link:
    return link


class _Link(asyncio.Protocol):
    """One connection: received bytes go straight into the conversation, and the call
    waiting for a reply is woken. The socket stays registered with the loop for the
    connection's life (one registration, not one per read)."""

    def __init__(self, conversation: Conversation) -> None:
        self.conversation = conversation
        self.stream: asyncio.Transport | None = None
        self.lost: OSError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.stream = transport

    def data_received(self, data: bytes) -> None:
        self.conversation.receive_data(data)
        self._wake()

    def eof_received(self) -> bool:
        self._gone(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone(exc)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _gone(self, exc: Exception | None) -> None:
        if self.lost is None:
            self.lost = (
                exc
                if isinstance(exc, OSError)
                else ConnectionResetError(errno.ECONNRESET, "the agent closed the connection")
            )
        self._wake()
        self.resume_writing()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def write(self, data: bytes) -> None:
        if self.lost is not None:
            raise self.lost
        assert self.stream is not None
        self.stream.write(data)
        while self._paused and self.lost is None:  # the agent reads slower than we write
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained
        if self.lost is not None:
            raise self.lost

    async def reply(self) -> Reply | None:
        """The reply to the request in flight; with none in flight, None once the
        resync is answered."""
        conv = self.conversation
        while True:
            reply = conv.next_reply()
            if reply is not None or not (conv.in_flight or conv.syncing):
                return reply
            if self.lost is not None:
                raise self.lost
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter

    def close(self) -> None:
        stream, self.stream = self.stream, None
        if stream is None:
            return
        sock = stream.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # the agent sees the end at once
        stream.abort()


class AsyncSocketTransport:
    """Talk to an agent over a unix socket from an asyncio event loop.

    Args:
        path: the chardev's unix socket (or a qemu-ga in ``unix-listen`` mode).
        idle_timeout: seconds without a request before the connection is given back;
            0 connects per call, None keeps it open until :meth:`aclose`.
        target: how messages name what is reached (default ``socket PATH``).
        max_reply_line: the largest reply taken (see ``SocketTransport``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        target: str | None = None,
        max_reply_line: int = DEFAULT_MAX_REPLY_BYTES,
    ) -> None:
        self.path = os.fspath(path)
        self.idle_timeout = idle_timeout
        self.max_reply_line = max_reply_line
        self._target = target or f"socket {self.path}"
        self._link: _Link | None = None
        self._conversation = Conversation(max_reply_bytes=max_reply_line)
        self._lock: asyncio.Lock | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._closed = False

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
        return self._link is not None

    async def execute(self, request: Request, timeout: float) -> Reply:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self._lock is None:
            self._lock = asyncio.Lock()
        try:
            async with asyncio.timeout_at(deadline):
                await self._lock.acquire()
        except TimeoutError:
            raise AgentTimeoutError(
                f"{request.command} to {self._target} waited {timeout:g} s for other calls "
                "on this connection to finish (one runs at a time), so it was not sent",
                target=self._target,
                command=request.command,
            ) from None
        try:
            if self._closed:
                raise AgentUnreachableError(
                    f"{self._target} was closed; open a new AsyncGuestAgent",
                    target=self._target,
                    command=request.command,
                )
            return await self._execute(request, timeout, deadline)
        except GuestAgentError:
            raise
        except BaseException:
            # CancelledError, KeyboardInterrupt, ...: the stream is in an unknown state.
            self._conversation.abandon()
            self._disconnect()
            raise
        finally:
            self._lock.release()
            if self.idle_timeout == 0:
                self._disconnect()
            elif self.idle_timeout is not None and self._link is not None:
                if self._idle is not None:
                    self._idle.cancel()
                self._idle = loop.call_later(self.idle_timeout, self._reap)

    async def _execute(self, request: Request, timeout: float, deadline: float) -> Reply:
        phase = "connect"
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    fresh = self._link is None
                    link = await self._ensure_connected(request.command, deadline)
                    phase = "sync"
                    try:
                        if self._conversation.needs_resync:
                            await link.write(self._conversation.resync())
                            await link.reply()
                        data = self._conversation.send(
                            request.command, request.arguments, replies=request.replies
                        )
                        phase = "request"
                        await link.write(data)
                        phase = "reply"
                        reply = await link.reply()
                        assert reply is not None
                        return reply
                    except (BrokenPipeError, ConnectionResetError):
                        # A kept connection whose peer has gone: nothing was delivered.
                        if fresh or phase not in ("sync", "request"):
                            raise
                        self._disconnect()
        except TimeoutError as exc:
            self._conversation.abandon()
            self._disconnect()
            raise timeout_error(
                self._target,
                request.command,
                timeout,
                sent=phase == "reply",
                synced_once=self._conversation.synced_once,
            ) from exc
        except OSError as exc:
            self._conversation.abandon()
            self._disconnect()
            raise lost_error(self._target, request.command, exc, writing=phase != "reply") from exc
        except GuestAgentError as exc:
            if isinstance(exc, ReplyTooLargeError):
                self._disconnect()
            exc.target, exc.command = self._target, request.command
            raise

    async def _ensure_connected(self, command: str, deadline: float) -> _Link:
        if self._link is not None:
            return self._link
        loop = asyncio.get_running_loop()
        delay = 0.005
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                sock.connect(self.path)  # a local connect does not wait for the peer
            except BlockingIOError as exc:  # the chardev's queue is full: retry
                sock.close()
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise busy_error(self._target, command) from exc
                await asyncio.sleep(min(delay, remaining))
                delay = min(delay * 2, 0.1)
                continue
            except OSError as exc:
                sock.close()
                raise connect_error(self._target, command, exc, self.path) from exc
            self._conversation = Conversation(max_reply_bytes=self.max_reply_line)
            link = _Link(self._conversation)
            try:
                await loop.create_unix_connection(functools.partial(_same, link), sock=sock)
            except BaseException:
                sock.close()
                raise
            self._link = link
            return link

    def _reap(self) -> None:
        """The idle timer: give the connection back unless a call holds it."""
        self._idle = None
        if self._lock is not None and self._lock.locked():
            return  # the call's end sets a new timer
        self._disconnect()

    def _disconnect(self) -> None:
        link, self._link = self._link, None
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if link is None:
            return
        link.close()
        self._conversation = Conversation(max_reply_bytes=self.max_reply_line)

    async def aclose(self) -> None:
        """Shut the connection down; the transport cannot be used afterwards."""
        self._closed = True
        self._disconnect()
