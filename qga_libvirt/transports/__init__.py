"""Backends: the raw chardev socket, libvirt, and an in-memory fake for tests."""

from .base import Reply, Request, Transport
from .fake import FakeTransport
from .socket import DEFAULT_IDLE_TIMEOUT, SocketTransport

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "FakeTransport",
    "Reply",
    "Request",
    "SocketTransport",
    "Transport",
]
