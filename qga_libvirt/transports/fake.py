"""An in-memory transport that answers from a function: for tests and examples."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..protocol import Reply
from .base import Request

__all__ = ["FakeTransport"]


class FakeTransport:
    """Answers each request with ``handler(request)``.

    The handler returns the agent's "return" value, or a :class:`Reply` (to send an
    error reply), or raises a :class:`~qga_libvirt.errors.GuestAgentError`. Every request
    is recorded in :attr:`requests`, so tests can check what went on the wire::

        fake = FakeTransport(lambda req: {"host-name": "vm1"})
        GuestAgent(fake).get_host_name()
        assert fake.requests[0].command == "guest-get-host-name"
    """

    def __init__(
        self,
        handler: Callable[[Request], Any],
        *,
        target: str = "fake agent",
        max_request_bytes: int | None = None,
        max_reply_bytes: int | None = None,
    ) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.closed = False
        self._target = target
        self._max_request_bytes = max_request_bytes
        self._max_reply_bytes = max_reply_bytes

    @property
    def target(self) -> str:
        return self._target

    @property
    def max_request_bytes(self) -> int | None:
        return self._max_request_bytes

    @property
    def max_reply_bytes(self) -> int | None:
        return self._max_reply_bytes

    def execute(self, request: Request, timeout: float) -> Reply:
        self.requests.append(request)
        answer = self.handler(request)
        return answer if isinstance(answer, Reply) else Reply(value=answer)

    def close(self) -> None:
        self.closed = True
