"""The QGA wire protocol, without I/O.

Bytes in (:meth:`Conversation.receive_data`), replies out (:meth:`Conversation.next_reply`),
requests out as bytes (:meth:`Conversation.send`). The caller owns the socket.

What the agent does, and what this module does about it:

- Requests and replies are JSON objects, one per line. The agent echoes a request's
  ``"id"`` in its reply, so every request gets a fresh id and only the reply carrying it
  is taken; anything else on the stream (a stale reply to a request that timed out, a
  reply meant for another client that used the channel before, a parse-error line) is
  dropped and counted.
- A fresh or suspect connection is resynchronised: one 0xFF byte resets the agent's
  parser (it answers with a "stray" parse error, dropped), then ``guest-sync-delimited``
  with a random id, whose reply the agent prefixes with 0xFF. Everything before that
  sentinel is dropped; a sentinel followed by an older sync id (from an earlier resync
  that timed out) is skipped too. The resync is pipelined with the request after it.
- Commands that send no reply on success (``guest-shutdown``, ``guest-suspend-*``) are
  followed by a ``guest-sync`` fence: the agent works in order, so an error reply for the
  command comes before the fence's reply, and the fence's reply means it was accepted.
- Framing is linear in the reply size: each byte is scanned for a newline once.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from .errors import ProtocolError

__all__ = ["SENTINEL", "Conversation", "LineFramer", "Reply", "encode_request"]

SENTINEL: Final = 0xFF
_SENTINEL_BYTE: Final = b"\xff"
_NEWLINE: Final = b"\n"
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"))
_DECODER: Final = json.JSONDecoder()


def encode_request(
    command: str, arguments: Mapping[str, Any] | None = None, *, request_id: int | None = None
) -> bytes:
    """One request line: ``{"execute": ..., "arguments": ..., "id": ...}`` + newline."""
    if not arguments and request_id is not None:  # the common case, without the encoder
        return b'{"execute":"%s","id":%d}\n' % (command.encode(), request_id)
    message: dict[str, Any] = {"execute": command}
    if arguments:
        message["arguments"] = arguments
    if request_id is not None:
        message["id"] = request_id
    return _ENCODER.encode(message).encode() + _NEWLINE


class Reply(NamedTuple):
    """What the agent answered: ``value`` (its "return") or an error class and desc."""

    value: Any = None
    error_class: str | None = None
    desc: str | None = None

    @property
    def is_error(self) -> bool:
        return self.error_class is not None

    @classmethod
    def from_message(cls, message: object) -> Reply:
        """Read a decoded ``{"return": ...}`` / ``{"error": {...}}`` object.

        Raises:
            ProtocolError: it is neither, with the message attached.
        """
        if isinstance(message, dict):
            if "return" in message:
                return cls(value=message["return"])
            error = message.get("error")
            if isinstance(error, dict):
                error_class, desc = error.get("class"), error.get("desc")
                if isinstance(error_class, str) and isinstance(desc, str):
                    return cls(error_class=error_class, desc=desc)
        raise ProtocolError(
            "the agent's reply has neither 'return' nor a valid 'error'", reply=message
        )


class LineFramer:
    """Newline-delimited frames from chunks split or merged anywhere."""

    __slots__ = ("_buffer", "_scanned")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._scanned = 0  # bytes already known to hold no newline

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._buffer += data

    def __len__(self) -> int:
        return len(self._buffer)

    def next_line(self) -> bytes | None:
        """The next whole line without its newline, or None until more data comes."""
        end = self._buffer.find(_NEWLINE, self._scanned)
        if end < 0:
            self._scanned = len(self._buffer)
            return None
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]  # bytearray drops its head in O(1)
        self._scanned = 0
        return line

    def skip_past_sentinel(self) -> bool:
        """Drop everything up to and including the next 0xFF; False if none yet."""
        index = self._buffer.find(_SENTINEL_BYTE)
        if index < 0:
            self._buffer.clear()
            self._scanned = 0
            return False
        del self._buffer[: index + 1]
        self._scanned = 0
        return True

    def clear(self) -> None:
        self._buffer.clear()
        self._scanned = 0


class Conversation:
    """The state of one connection to an agent: one request in flight at a time.

    Usage::

        conv = Conversation()
        data = conv.send("guest-ping")      # write these bytes
        while (reply := conv.next_reply()) is None:
            conv.receive_data(sock.recv(...))

    After a timeout or any doubt about the stream, call :meth:`abandon`: the next
    :meth:`send` resynchronises before its request.
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self._framer = LineFramer()
        self._rng = rng or random.SystemRandom()
        self._next_id = self._rng.randrange(1 << 30)
        self._sync_id: int | None = None  # set while a resync is outstanding
        self._sentinel_seen = False
        self._expected: int | None = None  # id of the request in flight
        self._fence: int | None = None  # id of the fence after a no-reply command
        self.needs_resync = True
        self.synced_once = False
        self.discarded = 0  # lines dropped as stale or garbage, for diagnostics

    @property
    def buffered(self) -> int:
        """Bytes received and not yet consumed."""
        return len(self._framer)

    @property
    def in_flight(self) -> bool:
        return self._expected is not None

    def _new_id(self) -> int:
        self._next_id = (self._next_id + 1) & 0x7FFFFFFF
        return self._next_id

    def send(
        self, command: str, arguments: Mapping[str, Any] | None = None, *, replies: bool = True
    ) -> bytes:
        """Bytes that carry one request (with a resync first when one is due).

        ``replies=False`` is for commands that send no reply on success: a ``guest-sync``
        fence follows, and success is reported as a reply with value None.
        """
        if self._expected is not None:
            raise RuntimeError("a request is already in flight on this conversation")
        out = b""
        if self.needs_resync:
            out = self._begin_resync()
        self._expected = self._new_id()
        out += encode_request(command, arguments, request_id=self._expected)
        if not replies:
            self._fence = self._new_id()
            out += encode_request("guest-sync", {"id": self._fence}, request_id=self._fence)
        return out

    def _begin_resync(self) -> bytes:
        self._framer.clear()
        self._sync_id = self._rng.randrange(1, 1 << 31)
        self._sentinel_seen = False
        self.needs_resync = False
        return _SENTINEL_BYTE + encode_request("guest-sync-delimited", {"id": self._sync_id})

    def abandon(self) -> None:
        """Give up on the request in flight (timeout, error): resync before the next one."""
        self._expected = self._fence = self._sync_id = None
        self.needs_resync = True

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        self._framer.feed(data)

    def next_reply(self) -> Reply | None:
        """The reply to the request in flight, or None until more data is needed.

        Raises:
            ProtocolError: a line carrying our id is not a valid reply.
        """
        while self._sync_id is not None:
            if not self._sentinel_seen:
                if not self._framer.skip_past_sentinel():
                    return None
                self._sentinel_seen = True
            line = self._framer.next_line()
            if line is None:
                return None
            self._sentinel_seen = False
            if _decode(line) == {"return": self._sync_id}:
                self._sync_id = None
                self.synced_once = True
            else:
                self.discarded += 1  # the sentinel of an earlier, abandoned resync
        while (line := self._framer.next_line()) is not None:
            if line[:1] == _SENTINEL_BYTE:
                line = line.lstrip(_SENTINEL_BYTE)
            message = _decode(line)
            ident = message.get("id") if isinstance(message, dict) else None
            if ident is None or (ident != self._expected and ident != self._fence):
                self.discarded += 1
                continue
            assert isinstance(message, dict)
            if "return" in message:
                reply = Reply(message["return"])
            else:
                try:
                    reply = Reply.from_message(message)
                except ProtocolError:
                    self.abandon()
                    raise
            if ident == self._fence and not reply.is_error:
                reply = Reply(value=None)
            self._expected = self._fence = None
            return reply
        return None


def _decode(line: bytes) -> object:
    try:
        return _DECODER.raw_decode(line.decode())[0]  # a line holds one value
    except ValueError:  # also UnicodeDecodeError
        return None
