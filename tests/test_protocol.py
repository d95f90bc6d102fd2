"""The sans-I/O protocol: bytes in, replies out; no sockets, no threads."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qga_libvirt import ProtocolError
from qga_libvirt.protocol import Conversation, LineFramer, Reply, encode_request


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
    sent = conv.send("guest-ping")
    sync_line, request_line = sent[1:].split(b"\n", 1)
    sync_id = json.loads(sync_line)["arguments"]["id"]
    request_id = json.loads(request_line)["id"]
    stream = (
        b'{"return": {}, "id": 1}\n'  # stale, before the sentinel
        + b'{"error": {"class": "GenericError", "desc": "JSON parse error, stray"}}\n'
        + b"\xff"
        + json.dumps({"return": sync_id}).encode()
        + b"\n"
        + json.dumps({"return": "stale", "id": request_id + 1000}).encode()
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
    sent = conv.send("guest-ping")
    sync_id = json.loads(sent[1:].split(b"\n")[0])["arguments"]["id"]
    request_id = json.loads(sent.split(b"\n")[1])["id"]
    conv.receive_data(b"\xff" + json.dumps({"return": sync_id + 1}).encode() + b"\n")
    assert conv.next_reply() is None
    conv.receive_data(b"\xff" + json.dumps({"return": sync_id}).encode() + b"\n")
    assert conv.next_reply() is None
    conv.receive_data(json.dumps({"return": {}, "id": request_id}).encode() + b"\n")
    assert conv.next_reply() == Reply(value={})
    assert conv.discarded == 1


def test_no_resync_once_synced_and_after_abandon_there_is_one() -> None:
    conv = Conversation(random.Random(2))
    first = conv.send("guest-ping")
    assert first.startswith(b"\xff")
    conv.abandon()
    again = conv.send("guest-ping")
    assert again.startswith(b"\xff")


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
    conv.send("guest-ping")
    with pytest.raises(RuntimeError):
        conv.send("guest-ping")
