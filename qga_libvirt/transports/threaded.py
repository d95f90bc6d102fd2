"""A blocking transport on asyncio: its calls run in worker threads.

libvirt's ``qemuAgentCommand`` blocks until the agent answers, so the asyncio client
reaches libvirt domains through :class:`ThreadedTransport`: each call runs the blocking
transport's ``execute`` in a thread of a bounded pool, and the event loop goes on.

Cancelling a call returns at once (``CancelledError``), but the request already handed
to libvirt cannot be taken back: libvirt waits for its reply (up to the call's timeout)
in the worker thread, and the agent may still run the command. Within a domain, libvirt
runs one agent command at a time, whatever the number of threads.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from ..protocol import Reply
from .base import Request, Transport, features_of

__all__ = ["MAX_THREADS", "ThreadedTransport"]

MAX_THREADS: Final = 16
"""Worker threads shared by every threaded transport of the process."""

_pool: ThreadPoolExecutor | None = None


def _shared_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=MAX_THREADS, thread_name_prefix="qga async")
    return _pool


class ThreadedTransport:
    """Run a blocking :class:`~qga_libvirt.transports.base.Transport` from asyncio.

    Args:
        transport: the blocking transport (a ``LibvirtTransport``, or any other).
        limit: at most this many of this transport's calls in threads at once (None:
            only the shared pool's bound, :data:`MAX_THREADS`).
    """

    def __init__(self, transport: Transport, *, limit: int | None = None) -> None:
        self.blocking = transport
        self.features = features_of(transport)  # power, agent events, identity: as is
        self._limit = limit
        self._gate: asyncio.Semaphore | None = None

    @property
    def target(self) -> str:
        return self.blocking.target

    @property
    def max_request_bytes(self) -> int | None:
        return self.blocking.max_request_bytes

    @property
    def max_reply_bytes(self) -> int | None:
        return self.blocking.max_reply_bytes

    async def execute(self, request: Request, timeout: float) -> Reply:
        loop = asyncio.get_running_loop()
        if self._limit is None:
            return await loop.run_in_executor(
                _shared_pool(), self.blocking.execute, request, timeout
            )
        if self._gate is None:
            self._gate = asyncio.Semaphore(self._limit)
        async with self._gate:
            return await loop.run_in_executor(
                _shared_pool(), self.blocking.execute, request, timeout
            )

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(_shared_pool(), self.blocking.close)
