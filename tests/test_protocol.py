"""The sans-I/O protocol: bytes in, replies out; no sockets, no threads."""

from __future__ import annotations

import base64
import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qga_libvirt import InvalidArgumentError, ProtocolError, ReplyTooLargeError
from qga_libvirt.protocol import Base64Text, Conversation, LineFramer, Reply, encode_request


def test_encode_request_without_and_with_arguments() -> None:
    assert json.loads(encode_request("guest-ping", request_id=3)) == {
        "execute": "guest-ping",
        "id": 3,
    }
    assert json.loads(encode_request("guest-sync", {"id": 5})) == {
        "execute": "guest-sync",
        "arguments": {"id": 5},
    }
    assert encode_request("guest-ping").endswith(b"\n")
    assert encode_request("guest-ping").count(b"\n") == 1


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for point in points:
        pieces.append(data[last:point])
        last = point
    pieces.append(data[last:])
    return pieces


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(st.lists(json_values, min_size=1, max_size=8), st.lists(st.integers(0, 10_000)))
def test_any_split_of_a_reply_stream_yields_the_same_replies(
    values: list[object], cuts: list[int]
) -> None:
    stream = b"".join(json.dumps({"return": v}).encode() + b"\n" for v in values)
    framer = LineFramer()
    got = []
    for piece in split_at(stream, cuts):
        framer.feed(piece)
        while (frame := framer.next_line()) is not None:
            got.append(json.loads(frame)["return"])
    assert got == values
    assert len(framer) == 0


@given(st.lists(st.integers(0, 2000)), st.integers(0, 1 << 30))
def test_conversation_finds_its_reply_in_any_split_after_resync(cuts: list[int], seed: int) -> None:
    conv = Conversation(random.Random(seed))
    sync_id = json.loads(conv.resync()[1:])["arguments"]["id"]
    resync_answer = (
        b'{"return": {}, "id": 1}\n'  # stale, before the sentinel
        + b'{"error": {"class": "GenericError", "desc": "JSON parse error, stray"}}\n'
        + b"\xff"
        + json.dumps({"return": sync_id}).encode()
        + b"\n"
    )
    for piece in split_at(resync_answer, cuts):
        conv.receive_data(piece)
        assert conv.next_reply() is None
    assert not conv.syncing
    request_id = json.loads(conv.send("guest-ping"))["id"]
    stream = (
        json.dumps({"return": "stale", "id": request_id + 1000}).encode()
        + b"\n"
        + json.dumps({"return": "ours", "id": request_id}).encode()
        + b"\n"
    )
    replies = []
    for piece in split_at(stream, cuts):
        conv.receive_data(piece)
        if (reply := conv.next_reply()) is not None:
            replies.append(reply)
    assert replies == [Reply(value="ours")]
    assert not conv.in_flight


def test_framer_scans_each_byte_once() -> None:
    """A 48 MiB reply in 64 KiB chunks is not re-scanned from the start per chunk."""
    framer = LineFramer()
    chunk = b"A" * 65536
    for n in range(1, 769):
        framer.feed(chunk)
        assert framer.next_line() is None
        assert framer._scanned == n * len(chunk)  # the next scan resumes here
    framer.feed(b"\n")
    frame = framer.next_line()
    assert frame is not None
    assert len(frame) == 48 << 20


def test_resync_skips_an_older_sentinel() -> None:
    conv = Conversation(random.Random(1))
    sync_id = json.loads(conv.resync()[1:])["arguments"]["id"]
    conv.receive_data(b"\xff" + json.dumps({"return": sync_id + 1}).encode() + b"\n")
    assert conv.next_reply() is None
    assert conv.syncing
    conv.receive_data(b"\xff" + json.dumps({"return": sync_id}).encode() + b"\n")
    assert conv.next_reply() is None
    assert not conv.syncing
    request_id = json.loads(conv.send("guest-ping"))["id"]
    conv.receive_data(json.dumps({"return": {}, "id": request_id}).encode() + b"\n")
    assert conv.next_reply() == Reply(value={})
    assert conv.discarded == 1


def test_a_request_is_never_written_before_the_resync_is_answered() -> None:
    """A request queued behind an unanswered resync would run whenever the agent came back."""
    conv = Conversation(random.Random(2))
    assert conv.needs_resync
    with pytest.raises(RuntimeError):
        conv.send("guest-ping")
    data = conv.resync()
    assert data.startswith(b"\xff")
    assert data.count(b"\n") == 1  # the resync alone
    with pytest.raises(RuntimeError):
        conv.send("guest-ping")  # still unanswered
    conv.abandon()  # the resync timed out
    assert conv.needs_resync
    with pytest.raises(RuntimeError):
        conv.send("guest-ping")


def test_error_reply_is_returned_not_raised() -> None:
    conv = Conversation(random.Random(3))
    conv.needs_resync = False
    request_id = json.loads(conv.send("guest-nosuch"))["id"]
    conv.receive_data(
        json.dumps(
            {"id": request_id, "error": {"class": "CommandNotFound", "desc": "not found"}}
        ).encode()
        + b"\n"
    )
    reply = conv.next_reply()
    assert reply is not None
    assert reply.is_error
    assert (reply.error_class, reply.desc) == ("CommandNotFound", "not found")


def test_fence_turns_into_success_for_no_reply_commands() -> None:
    conv = Conversation(random.Random(4))
    conv.needs_resync = False
    data = conv.send("guest-shutdown", replies=False)
    shutdown, fence = (json.loads(x) for x in data.splitlines())
    assert shutdown["execute"] == "guest-shutdown"
    assert fence["execute"] == "guest-sync"
    conv.receive_data(json.dumps({"return": fence["arguments"]["id"], "id": fence["id"]}).encode())
    assert conv.next_reply() is None  # no newline yet
    conv.receive_data(b"\n")
    assert conv.next_reply() == Reply(value=None)


def test_malformed_reply_with_our_id_raises_and_asks_for_resync() -> None:
    conv = Conversation(random.Random(5))
    conv.needs_resync = False
    request_id = json.loads(conv.send("guest-ping"))["id"]
    conv.receive_data(json.dumps({"id": request_id, "error": "no"}).encode() + b"\n")
    with pytest.raises(ProtocolError) as caught:
        conv.next_reply()
    assert caught.value.reply == {"id": request_id, "error": "no"}
    assert conv.needs_resync


def test_one_request_at_a_time() -> None:
    conv = Conversation()
    conv.needs_resync = False
    conv.send("guest-ping")
    with pytest.raises(RuntimeError):
        conv.send("guest-ping")


def _synced(seed: int = 0, **kwargs: int) -> Conversation:
    conv = Conversation(random.Random(seed), **kwargs)
    sync_id = json.loads(conv.resync()[1:])["arguments"]["id"]
    conv.receive_data(b"\xff" + json.dumps({"return": sync_id}).encode() + b"\n")
    assert conv.next_reply() is None
    assert not conv.syncing
    return conv


def test_deeply_nested_reply_is_a_protocol_error_and_the_next_call_resyncs() -> None:
    conv = _synced()
    conv.send("guest-ping")
    conv.receive_data(b"[" * 200_000 + b"\n")
    with pytest.raises(ProtocolError) as caught:
        conv.next_reply()
    assert "nested too deeply" in str(caught.value)
    assert conv.needs_resync
    assert not conv.in_flight


def test_reply_past_the_cap_is_dropped_unread() -> None:
    conv = _synced(max_reply_bytes=1000)
    conv.send("guest-ping")
    conv.receive_data(b'{"return": "' + b"A" * 600)
    assert conv.next_reply() is None
    conv.receive_data(b"A" * 600)
    with pytest.raises(ReplyTooLargeError) as caught:
        conv.next_reply()
    assert "1000 bytes" in str(caught.value)
    assert conv.buffered == 0  # nothing kept
    assert conv.needs_resync
    # The rest of the giant line is dropped by the resync, without being buffered.
    sync_id = json.loads(conv.resync()[1:])["arguments"]["id"]
    conv.receive_data(b"A" * 5000)
    assert conv.next_reply() is None
    assert conv.buffered == 0
    conv.receive_data(b'AAA"}\n\xff' + json.dumps({"return": sync_id}).encode() + b"\n")
    assert conv.next_reply() is None
    assert not conv.syncing


def test_the_cap_applies_to_the_resync_answer_too() -> None:
    conv = Conversation(random.Random(1), max_reply_bytes=100)
    conv.resync()
    conv.receive_data(b"\xff" + b"1" * 200)
    with pytest.raises(ReplyTooLargeError):
        conv.next_reply()


def test_id_less_error_after_a_resync_answers_our_request() -> None:
    """qemu-ga answers a request it cannot parse with an error that has no id."""
    conv = _synced()
    conv.send("guest-ping")
    conv.receive_data(b'{"error": {"class": "GenericError", "desc": "JSON parse error"}}\n')
    reply = conv.next_reply()
    assert reply == Reply(error_class="GenericError", desc="JSON parse error")
    assert not conv.in_flight
    # And after a finished exchange, too.
    conv.send("guest-ping")
    conv.receive_data(b'{"error": {"class": "GenericError", "desc": "again"}}\n')
    assert conv.next_reply() == Reply(error_class="GenericError", desc="again")


def test_id_less_error_is_not_taken_when_something_else_may_be_answered() -> None:
    conv = _synced()
    request_id = json.loads(conv.send("guest-shutdown", replies=False).splitlines()[0])["id"]
    # The command failed: its fence's reply is still due, so the stream is not clean.
    conv.receive_data(
        json.dumps({"id": request_id, "error": {"class": "C", "desc": "d"}}).encode() + b"\n"
    )
    assert conv.next_reply() == Reply(error_class="C", desc="d")
    conv.send("guest-ping")
    conv.receive_data(b'{"error": {"class": "GenericError", "desc": "stale"}}\n')
    assert conv.next_reply() is None
    assert conv.in_flight


@pytest.mark.parametrize(
    ("arguments", "where"),
    [
        ({"path": "/tmp/caf\udce9"}, "argument path"),
        ({"arg": ["ok", "bad\ud800"]}, "argument arg, item 1"),
        ({"time": float("nan")}, "argument time"),
        ({"x": float("inf")}, "argument x"),
        ({"data": b"bytes"}, "argument data"),
        ({"nested": {"k\udcff": 1}}, "argument nested, a key"),
        ({"nested": {"k": [float("nan")]}}, "argument nested, field k, item 0"),
    ],
)
def test_arguments_the_agent_cannot_parse_are_refused_before_sending(
    arguments: dict[str, object], where: str
) -> None:
    conv = _synced()
    with pytest.raises(InvalidArgumentError) as caught:
        conv.send("guest-file-open", arguments)
    assert caught.value.argument == where
    assert where in str(caught.value)
    assert "nothing was sent" in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
    assert not caught.value.is_unreachable
    assert isinstance(caught.value, ValueError)
    assert not conv.in_flight  # nothing changed: the next request goes out
    assert json.loads(conv.send("guest-ping"))["execute"] == "guest-ping"


def test_a_refused_secret_is_not_in_the_error() -> None:
    secret = "hunter2\udc80"
    with pytest.raises(InvalidArgumentError) as caught:
        encode_request("guest-set-user-password", {"username": "u", "password": secret})
    assert "hunter2" not in repr(caught.value) + str(caught.value)
    assert caught.value.__cause__ is None


def test_non_ascii_arguments_go_as_utf8() -> None:
    line = encode_request("guest-file-open", {"path": "/tmp/café"}, request_id=1)
    assert "/tmp/café".encode() in line
    assert json.loads(line)["arguments"]["path"] == "/tmp/café"


def test_base64_text_is_spliced_in_as_it_is() -> None:
    data = bytes(range(256)) * 50
    arguments = {"handle": 1000, "buf-b64": Base64Text.of(data), "count": len(data)}
    spliced = encode_request("guest-file-write", arguments, request_id=7)
    plain = encode_request(
        "guest-file-write",
        {k: str(v) if isinstance(v, str) else v for k, v in arguments.items()},
        request_id=7,
    )
    assert spliced.endswith(b"\n")
    assert spliced.count(b"\n") == 1
    assert json.loads(spliced) == json.loads(plain)
    assert json.loads(spliced)["arguments"]["buf-b64"] == base64.b64encode(data).decode()
    no_id = encode_request("guest-exec", {"path": "/bin/cat", "input-data": Base64Text.of(b"x")})
    assert json.loads(no_id) == {
        "execute": "guest-exec",
        "arguments": {"path": "/bin/cat", "input-data": "eA=="},
    }


def test_base64_text_beside_an_unparseable_argument_is_still_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="path"):
        encode_request("guest-exec", {"input-data": Base64Text.of(b"x"), "path": "\udcff"})
