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
  that timed out) is skipped too. The request is written only once the resync has been
  answered: a request written behind a resync to an agent that is not there waits in the
  chardev and runs whenever the agent comes back, long after its caller gave up
  (measured: timed-out ``guest-exec`` calls all ran after a reboot). A connection whose
  last exchange went well is not resynchronised (that would cost a round trip per call):
  the one request sent to an agent that has just stopped may still run later, and its
  timeout says so; every call after that timeout resyncs first.
- Arguments the agent's parser refuses (a lone surrogate, e.g. from a file name that is
  not UTF-8; NaN or infinity) are refused before sending: the agent would answer with a
  parse error that carries no id. An id-less error that comes when only our request can
  be answered (right after a resync or a finished exchange) is taken as its answer.
- One reply is at most ``max_reply_bytes`` (default :data:`DEFAULT_MAX_REPLY_BYTES`):
  past that the reply is dropped unread and :class:`ReplyTooLargeError` raised, so a
  hostile guest cannot make the host buffer without bound. A reply nested deeper than
  Python's decoder goes is a :class:`ProtocolError`.
- Commands that send no reply on success (``guest-shutdown``, ``guest-suspend-*``) are
  followed by a ``guest-sync`` fence: the agent works in order, so an error reply for the
  command comes before the fence's reply, and the fence's reply means it was accepted.
- Framing is linear in the reply size: each byte is scanned for a newline once.
"""

from __future__ import annotations

import binascii
import json
import random
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from .errors import InvalidArgumentError, ProtocolError, ReplyTooLargeError

__all__ = [
    "DEFAULT_MAX_REPLY_BYTES",
    "SENTINEL",
    "Base64Text",
    "Conversation",
    "LineFramer",
    "Reply",
    "encode_request",
]

SENTINEL: Final = 0xFF
_SENTINEL_BYTE: Final = b"\xff"
_NEWLINE: Final = b"\n"
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_DECODER: Final = json.JSONDecoder()
_TOO_DEEP: Final = object()  # what _decode returns for a line nested beyond the decoder

DEFAULT_MAX_REPLY_BYTES: Final = 96 << 20
"""The largest reply line taken by default: well above the largest legitimate one (a
48 MiB ``guest-file-read`` is 64 MiB of base64; two 16 MiB exec streams about 43 MiB)."""


class Base64Text(bytes):
    """Base64 text, as the ASCII bytes that go on the wire: no character of it needs
    escaping in JSON, so a request line takes it as it is, unscanned and never decoded
    into a str (file contents and exec input, megabytes of it: escaping them was half the
    client's CPU per uploaded MiB, decoding them into text a fifth). Make one with
    :meth:`of`; ``str()`` gives the text, ``repr()`` only its size."""

    __slots__ = ()

    @classmethod
    def of(cls, data: bytes | bytearray | memoryview) -> Base64Text:
        return cls(binascii.b2a_base64(data, newline=False))

    def __str__(self) -> str:
        return self.decode("ascii")

    def __repr__(self) -> str:  # what a trace shows: the size of the data, not the data
        return f"<{len(self) * 3 // 4 - self[-2:].count(b'=')} bytes>"


def _encode_with_bulk(message: dict[str, Any], arguments: Mapping[str, Any]) -> bytes:
    """The request line, each Base64Text argument spliced in as it is."""
    pieces = [_ENCODER.encode(message)[:-1].encode(), b',"arguments":{']
    for index, (key, value) in enumerate(arguments.items()):
        if index:
            pieces.append(b",")
        pieces.append(_ENCODER.encode(key).encode())
        if type(value) is Base64Text:
            pieces += (b':"', value, b'"')
        else:
            pieces += (b":", _ENCODER.encode(value).encode())
    pieces.append(b"}}\n")
    return b"".join(pieces)


def encode_request(
    command: str, arguments: Mapping[str, Any] | None = None, *, request_id: int | None = None
) -> bytes:
    """One request line: ``{"execute": ..., "arguments": ..., "id": ...}`` + newline.

    Raises:
        InvalidArgumentError: an argument the agent cannot parse (a string with a lone
            surrogate, NaN or infinity, a value JSON has no form for); the message names
            the argument (``argument path``, ``argument arg, item 1``), never its value.
    """
    if not arguments and request_id is not None:  # the common case, without the encoder
        return b'{"execute":"%s","id":%d}\n' % (command.encode(), request_id)
    message: dict[str, Any] = {"execute": command}
    if request_id is not None:
        message["id"] = request_id
    try:
        if arguments and any(type(value) is Base64Text for value in arguments.values()):
            return _encode_with_bulk(message, arguments)
        if arguments:
            message["arguments"] = arguments
        return _ENCODER.encode(message).encode() + _NEWLINE
    except (ValueError, TypeError, RecursionError):  # UnicodeEncodeError is a ValueError
        # Not chained: a UnicodeEncodeError carries the whole string (a password, file
        # contents), and its repr would show it.
        raise _invalid_argument(command, arguments) from None


def _invalid_argument(command: str, arguments: Mapping[str, Any] | None) -> InvalidArgumentError:
    where, why = _find_invalid(arguments or {}, "")
    if not where:
        where, why = "the arguments", "cannot be encoded as JSON"
    return InvalidArgumentError(
        f"{command}: {where} {why}, which the agent cannot parse; nothing was sent",
        command=command,
        argument=where,
    )


def _find_invalid(value: object, where: str, depth: int = 0) -> tuple[str, str]:
    """The path of the first value that cannot go on the wire, and why."""
    if depth > 200:  # the agent's parser stops at 1024 levels, Python's encoder sooner
        return where, "is nested too deeply"
    if isinstance(value, Base64Text):
        return "", ""
    if isinstance(value, str):
        if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
            return where, (
                "contains a lone surrogate (a name that is not UTF-8, decoded with "
                "surrogateescape?)"
            )
        return "", ""
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return where, "is NaN or infinite"
        return "", ""
    if isinstance(value, Mapping):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    elif value is None or isinstance(value, bool | int):
        return "", ""
    else:
        return where, f"is a {type(value).__name__}, which JSON cannot carry"
    for key, item in items:
        if isinstance(value, Mapping):
            inner = f"argument {key}" if not where else f"{where}, field {key}"
            if not isinstance(key, str):
                return where or "the arguments", f"has a key of type {type(key).__name__}"
            found = _find_invalid(key, f"{where or 'the arguments'}, a key")
        else:
            inner, found = f"{where}, item {key}", ("", "")
        if not found[0]:
            found = _find_invalid(item, inner, depth + 1)
        if found[0]:
            return found
    return "", ""


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
        if conv.needs_resync:                   # a fresh or suspect connection
            sock.sendall(conv.resync())
            while conv.syncing:                 # wait for the agent to prove it is there
                conv.receive_data(sock.recv(...))
                conv.next_reply()
        sock.sendall(conv.send("guest-ping"))
        while (reply := conv.next_reply()) is None:
            conv.receive_data(sock.recv(...))

    After a timeout or any doubt about the stream, call :meth:`abandon`: a resync is due
    before the next request.
    """

    def __init__(
        self, rng: random.Random | None = None, *, max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES
    ) -> None:
        self._framer = LineFramer()
        self._rng = rng or random.SystemRandom()
        self._next_id = self._rng.randrange(1 << 30)
        self._sync_id: int | None = None  # set while a resync is outstanding
        self._sentinel_seen = False
        self._expected: int | None = None  # id of the request in flight
        self._fence: int | None = None  # id of the fence after a no-reply command
        # True when nothing but the answer to our next request can arrive: right after a
        # resync, or after an exchange that left nothing outstanding.
        self._clean = False
        self.max_reply_bytes = max_reply_bytes
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

    @property
    def syncing(self) -> bool:
        """A resync was sent and its answer has not come yet."""
        return self._sync_id is not None

    def _new_id(self) -> int:
        self._next_id = (self._next_id + 1) & 0x7FFFFFFF
        return self._next_id

    def resync(self) -> bytes:
        """Bytes that resynchronise the stream; feed replies until :attr:`syncing` is False."""
        self._framer.clear()
        self._expected = self._fence = None
        self._sync_id = self._rng.randrange(1, 1 << 31)
        self._sentinel_seen = False
        self._clean = False
        self.needs_resync = False
        return _SENTINEL_BYTE + encode_request("guest-sync-delimited", {"id": self._sync_id})

    def send(
        self, command: str, arguments: Mapping[str, Any] | None = None, *, replies: bool = True
    ) -> bytes:
        """Bytes that carry one request.

        ``replies=False`` is for commands that send no reply on success: a ``guest-sync``
        fence follows, and success is reported as a reply with value None.

        Raises:
            InvalidArgumentError: an argument the agent cannot parse (nothing changes).
            RuntimeError: a request is in flight, or a resync is due or unanswered.
        """
        if self._expected is not None:
            raise RuntimeError("a request is already in flight on this conversation")
        if self.needs_resync or self._sync_id is not None:
            raise RuntimeError("resynchronise (and wait for the answer) before a request")
        request_id = (self._next_id + 1) & 0x7FFFFFFF
        out = encode_request(command, arguments, request_id=request_id)  # may refuse
        self._next_id = self._expected = request_id
        if not replies:
            self._fence = self._new_id()
            out += encode_request("guest-sync", {"id": self._fence}, request_id=self._fence)
        return out

    def abandon(self) -> None:
        """Give up on the request in flight (timeout, error): resync before the next one."""
        self._expected = self._fence = self._sync_id = None
        self._clean = False
        self.needs_resync = True

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        self._framer.feed(data)

    def next_reply(self) -> Reply | None:
        """The reply to the request in flight, or None until more data is needed.

        With a resync outstanding, consumes its answer first (and returns None when no
        request is in flight).

        Raises:
            ProtocolError: a line carrying our id is not a valid reply, or a reply is
                nested too deeply to decode (the conversation is abandoned).
            ReplyTooLargeError: the reply passed ``max_reply_bytes``; it is dropped
                unread and the conversation abandoned.
        """
        while self._sync_id is not None:
            if not self._sentinel_seen:
                if not self._framer.skip_past_sentinel():
                    return None
                self._sentinel_seen = True
            line = self._framer.next_line()
            if line is None:
                self._check_size()
                return None
            self._sentinel_seen = False
            if _decode(line) == {"return": self._sync_id}:
                self._sync_id = None
                self._clean = True
                self.synced_once = True
            else:
                self.discarded += 1  # the sentinel of an earlier, abandoned resync
        while (line := self._framer.next_line()) is not None:
            if line[:1] == _SENTINEL_BYTE:
                line = line.lstrip(_SENTINEL_BYTE)
            message = _decode(line)
            if message is _TOO_DEEP and self._expected is not None:
                self.abandon()
                raise ProtocolError(
                    "the agent's reply is nested too deeply to decode", reply=line[:1024]
                )
            ident = message.get("id") if isinstance(message, dict) else None
            if ident is None and self._clean and isinstance(message, dict) and "error" in message:
                ident = self._expected  # an id-less error, when only our request can be answered
            if ident is None or (ident != self._expected and ident != self._fence):
                self.discarded += 1
                self._clean = False
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
            # After an error to a no-reply command, the fence's own reply is still due.
            self._clean = self._fence is None or ident == self._fence
            if ident == self._fence and not reply.is_error:
                reply = Reply(value=None)
            self._expected = self._fence = None
            return reply
        self._check_size()
        return None

    def _check_size(self) -> None:
        if len(self._framer) > self.max_reply_bytes:
            self.abandon()  # the resync drops the rest unread: a reply has no 0xFF in it
            self._framer.clear()
            raise ReplyTooLargeError(
                f"the agent's reply passed {self.max_reply_bytes} bytes, the most this "
                "connection takes, without ending: it was dropped unread"
            )


def _decode(line: bytes) -> object:
    try:
        return _DECODER.raw_decode(line.decode())[0]  # a line holds one value
    except ValueError:  # also UnicodeDecodeError
        return None
    except RecursionError:
        return _TOO_DEEP
